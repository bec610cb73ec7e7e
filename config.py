"""Parley's settings: flags, then the environment, then the TOML file named by `--config`.

Every flag also reads `PARLEY_<FLAG>` from the environment (lists comma separated) and the
same key from the config file; flags win over the environment, the environment over the file.
Tables of the file that are not settings ([llm.*], [[agents]], [[mcp_servers]], …) are kept
in `Config.extra` for the parts of the server that read them.

One schema (`FILE`: the settings, from Config's fields, and `TABLES`; config_schema.py) checks
all of it before anything starts: an unknown table or key, a value of the wrong type or out of
its bounds, in the file, the environment or a flag, is a problem naming where it is and what was
expected; the start (and `parley check-config FILE`) reports every problem and exits 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agents import AGENT_TYPES
from agents.knowledge import EXTRACT_TIMEOUT_S
from agents.react import MAX_MAX_STEPS
from auth.jwks import check_location as check_jwks_location
from config_schema import (
    Anything,
    ArrayOf,
    Bool,
    Either,
    FilePath,
    Gone,
    Int,
    List,
    Number,
    OneOf,
    Problem,
    Spec,
    Str,
    Table,
    Url,
    Where,
    shown,
)
from handlers.base import proxy_networks


@dataclass
class Config:
    """Every setting, with its default; the help text is the field's metadata."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8090, metadata={"help": "port to listen on (0: any free port)"})
    data_dir: Path = field(default=Path("./data"), metadata={"help": "directory holding everything the server owns"})
    internal_key: str | None = field(default=None, metadata={"help": "key for X-Internal-Key (server to server); unset: refused"})
    metrics_token: str | None = field(default=None, metadata={"help": "token that GET /metrics takes as `Authorization: Bearer TOKEN` (the internal key is taken too); neither set: no /metrics"})
    jwks: list[str] = field(default_factory=list, metadata={"help": "JWKS https:// URL or local file to trust for Bearer JWTs (repeatable; no redirects, 256 KB at most)"})
    jwt_audience: str = field(default="authenticated", metadata={"help": "required JWT `aud`"})
    jwt_issuer: str | None = field(default=None, metadata={"help": "required JWT `iss` of external tokens (checked exactly when set)"})
    drain_timeout: float = field(default=30.0, metadata={"help": "seconds in-flight runs get to finish on SIGTERM"})
    cors_origin: list[str] = field(default_factory=list, metadata={"help": "allowed CORS origin, `*` wildcards allowed (repeatable); default: own origin and http://localhost:3000"})
    demo_delay_ms: float = field(default=15.0, metadata={"help": "delay between the demo agent's words"})
    default_agent: str = field(default="demo", metadata={"help": "agent of runs that name none"})
    log_format: str = field(default="text", metadata={"help": "request log format: text or json"})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    max_streams_per_user: int = field(default=100, metadata={"help": "open SSE streams one user may hold (429 beyond)"})
    keepalive_s: float = field(default=15.0, metadata={"help": "seconds between SSE keep-alive comments"})
    idle_timeout: float = field(default=75.0, metadata={"help": "seconds before an idle keep-alive connection is closed"})
    dev: bool = field(default=False, metadata={"help": "development mode: GET /api/v1/auth/dev-code shows outbox codes to a browser on this machine"})
    public_url: str | None = field(default=None, metadata={"help": "URL people reach the server at, for links in mail and the own origin (default: http://HOST:PORT of the listener)"})
    allowed_host: list[str] = field(default_factory=list, metadata={"help": "Host name the unauthenticated account routes accept (repeatable; others get 421); always: the public URL's host, localhost, 127.0.0.1, [::1], the listener's host"})
    trusted_proxy: list[str] = field(default_factory=list, metadata={"help": "CIDR of a reverse proxy whose X-Forwarded-For gives the client address for rate limits and logs (repeatable); default: none, forwarding headers are ignored"})
    store: str = field(default="sqlite", metadata={"help": "the store: sqlite (data-dir/parley.db), or postgresql://user:password@host:port/dbname for any number of instances on one database"})
    lease_s: float = field(default=15.0, metadata={"help": "seconds a run's lease lasts on a shared store: the runs of an instance that died end within this and a third more"})
    workers: int = field(default=1, metadata={"help": "processes of this instance sharing the port (PostgreSQL store only)"})
    config: Path | None = field(default=None, metadata={"help": "TOML config file (same keys as the flags, plus [llm.*], [[agents]], [[mcp_servers]], [titles], [transcribe], [plans.*], [credits])"})
    extra: dict[str, Any] = field(default_factory=dict, metadata={"help": ""})


_FIELDS = {f.name: f for f in fields(Config) if f.name != "extra"}
_POSITIVE_S = Number(0, above=True, unit="seconds")

# Each setting is checked by the spec of its type (_BY_TYPE), or by its own when it has bounds
# or choices; so a new field of Config is a known key of the file, and PARLEY_<NAME> and its flag.
_SETTING_SPECS: dict[str, Spec] = {
    "port": Int(0, 65535),
    "jwks": List(Str(nonempty=True)),
    "drain_timeout": Number(0, unit="seconds"),
    "demo_delay_ms": Number(0, unit="milliseconds"),
    "log_format": OneOf("text", "json"),
    "log_level": OneOf("debug", "info", "warning", "error"),
    "max_streams_per_user": Int(1),
    "keepalive_s": _POSITIVE_S,
    "idle_timeout": _POSITIVE_S,
    "public_url": Url(),
    "store": Either(Str(nonempty=True), Table({"url": Str(nonempty=True)}, required=("url",))),  # or [store] url = …
    "lease_s": Number(1, unit="seconds"),
    "workers": Int(1),
}
_BY_TYPE: dict[str, Spec] = {
    "str": Str(), "str | None": Str(), "int": Int(), "float": Number(), "bool": Bool(),
    "Path": FilePath(), "Path | None": FilePath(), "list[str]": List(Str()),
}
SETTINGS: dict[str, Spec] = {name: _SETTING_SPECS.get(name) or _BY_TYPE[str(f.type)] for name, f in _FIELDS.items()}

_LLM = Table({
    "base_url": Url(), "model": Str(nonempty=True), "api_key_env": Str(nonempty=True, what="the name of an environment variable"),
    "timeout_s": _POSITIVE_S, "connect_timeout_s": _POSITIVE_S, "total_timeout_s": _POSITIVE_S,
    "max_retries": Int(0), "temperature": Number(0), "max_tokens": Int(1), "extra_body": Table(rest=Anything()),
}, required=("base_url", "model"))
_AGENT = Table({
    "id": Str(nonempty=True), "name": Str(), "type": OneOf(*AGENT_TYPES), "llm": Str(nonempty=True),
    "tools": List(Str(nonempty=True)), "instructions": Str(), "description": Str(), "max_steps": Int(1, MAX_MAX_STEPS),
}, required=("id",))
_MCP_SERVER = Table({
    "name": Str(pattern=r"[A-Za-z0-9_-]{1,64}", what="1-64 letters, digits, _ or -"),
    "command": Either(Str(nonempty=True), List(Str(nonempty=True), min_len=1)), "url": Url(),
    "headers": Table(rest=Str()), "env": Table(rest=Str()),
    "timeout": Number(0, 3600, above=True, unit="seconds"), "connect_timeout": Number(0, 3600, above=True, unit="seconds"),
}, required=("name",))
_PLAN = Table({"runs_per_day": Int(0), "max_running": Int(0), "agents": List(Str(nonempty=True)), "credits": Int(0)})

# The tables of the file that are not settings, kept in Config.extra for their readers (which check
# what needs more than one table: that an agent's llm is configured, that a priced tool exists …).
TABLES: dict[str, Spec] = {
    "llm": Table(rest=_LLM),  # [llm.NAME]: agents/llm.py
    "agents": ArrayOf(_AGENT),  # agents/__init__.py
    "mcp_servers": ArrayOf(_MCP_SERVER),  # agents/mcp_client.py
    "titles": Table({"llm": Str(nonempty=True)}, required=("llm",)),  # agents/titles.py
    "transcribe": Table({  # agents/transcribe.py
        "llm": Str(nonempty=True), "model": Str(nonempty=True), "timeout_s": _POSITIVE_S,
        "language": Str(pattern=".{2,16}", what='a language code such as "en"'),
    }, required=("llm",)),
    "demo": Table({"max_count": Int(0), "max_sleep_s": Number(0, unit="seconds")}),  # agents/demo.py
    "documents": Table({  # agents/knowledge.py
        "quota_mb": Number(0, above=True), "uploads_per_minute": Int(1),
        "extract_timeout_s": Number(0, EXTRACT_TIMEOUT_S, above=True, unit="seconds"),
    }),
    "plans": Table({"default": Str(nonempty=True)}, rest=_PLAN),  # [plans], [plans.NAME]: runs/plans.py
    "credits": Table(rest=Int(0)),  # tool = price: runs/plans.py
    "accounts": Table({  # accounts/service.py
        "admins": List(Str(nonempty=True)), "redirect_origins": List(Url()),
        "argon2": Table({"time_cost": Int(1), "memory_cost": Int(8), "parallelism": Int(1)}),
    }),
    "smtp": Table({  # accounts/mail.py
        "host": Str(nonempty=True), "port": Int(1, 65535), "username": Str(), "password_env": Str(nonempty=True),
        "from": Str(nonempty=True), "starttls": Bool(), "use_tls": Bool(), "ca_file": Str(nonempty=True),
    }, required=("host",)),
    "default_plan": Gone("set the default plan as `default` in the [plans] table"),
}
FILE = Table({
    **SETTINGS, **TABLES,
    "config": Gone("a config file names no other; give it with --config or PARLEY_CONFIG"),
}, dashes=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Parley: a self-hosted agent run server. Every flag also reads PARLEY_<FLAG> "
        "(e.g. PARLEY_INTERNAL_KEY; lists comma-separated) and the same key in the --config TOML file; "
        "flags win over the environment, the environment over the file.",
    )
    for f in _FIELDS.values():
        flag = "--" + f.name.replace("_", "-")
        env = "PARLEY_" + f.name.upper()
        if isinstance(SETTINGS[f.name], List):
            parser.add_argument(flag, action="append", default=None, help=f"{f.metadata['help']} [{env}]")
        elif isinstance(SETTINGS[f.name], Bool):
            parser.add_argument(flag, action="store_const", const=True, default=None,
                                help=f"{f.metadata['help']} (default: off) [{env}=1]")
        else:
            parser.add_argument(flag, default=None, help=f"{f.metadata['help']} (default: {f.default}) [{env}]")
    return parser


def _file_values(path: str) -> tuple[dict[str, Any], list[str]]:
    """The checked contents of the TOML file, and its problems (each naming the file)."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        return {}, [f"{path}: cannot be read: {exc.strerror or exc}"]
    except tomllib.TOMLDecodeError as exc:
        return {}, [f"{path}: not valid TOML: {exc}"]
    values, problems = check_file(doc)
    return values, [f"{path}: {p}" for p in problems]


def check_file(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A config file's contents made normal by the schema (`[store] url` as `store`), and every problem."""
    problems: list[Problem] = []
    values: dict[str, Any] = FILE.check(doc, Where(), problems)
    if isinstance(values.get("store"), dict):
        url = values.pop("store").get("url")  # none: a problem already
        if url is not None:
            values["store"] = url
    return values, [str(p) for p in problems]


def _given(spec: Spec, value: Any, where: Where, problems: list[Problem]) -> Any:
    """A setting from the environment or a flag (text, or a flag's list or True), checked; a problem
    shows the text as it was given."""
    if not isinstance(value, str):
        return spec.check(value, where, problems)
    found: list[Problem] = []
    try:
        checked = spec.check(spec.from_text(value), where, found)
    except ValueError:
        found.append(Problem(where, ""))
    if found:
        problems.append(Problem(where, f"expected {spec.expected}, got {shown(value)}"))
        return None
    return checked


def _read(config_path: str | None, environ: dict[str, str], flags: dict[str, Any]) -> tuple[Config, list[str]]:
    """The settings of the file, overridden by the environment's (PARLEY_<NAME>), by the flags', and every
    problem of each (a setting with a problem keeps its default)."""
    cfg = Config()
    problems: list[str] = []
    labels: dict[str, str] = {}  # where each setting was given, for the problems of _checked
    if config_path:
        values, problems = _file_values(config_path)
        cfg.extra = {name: value for name, value in values.items() if name not in SETTINGS}
        for name in SETTINGS.keys() & values.keys():
            setattr(cfg, name, values[name])
            labels[name] = f"{config_path}: {name}"
    for name, spec in SETTINGS.items():
        given = [(f"PARLEY_{name.upper()}", environ.get(f"PARLEY_{name.upper()}")),
                 ("--" + name.replace("_", "-"), flags.get(name))]
        for label, raw in given:
            if raw is None:
                continue
            found: list[Problem] = []
            value = _given(spec, raw, Where(key=label), found)
            problems += map(str, found)
            if not found:
                setattr(cfg, name, value)
                labels[name] = label
    problems += _checked(cfg, lambda name: labels.get(name, "--" + name.replace("_", "-")))
    return cfg, problems


def _checked(cfg: Config, label: Callable[[str], str]) -> list[str]:
    """The problems of settings that need more than their type (each alone or together); `label`:
    where a setting was given."""
    problems = _checked_addresses(cfg, label)
    if store_kind(cfg.store) is None:
        problems.append(f"{label('store')}: expected sqlite or a postgresql:// URL, got {redacted(cfg.store)!r}")
    elif cfg.workers > 1 and store_kind(cfg.store) == "sqlite":
        problems.append(f"{label('workers')}: more than one needs the PostgreSQL store (--store postgresql://…): "
                        "SQLite has one writer, in one process; run one process per data dir")
    return problems


def _checked_addresses(cfg: Config, label: Callable[[str], str]) -> list[str]:
    """--trusted-proxy, --public-url (made normal here) and --jwks."""
    problems = []
    try:
        proxy_networks(cfg.trusted_proxy)
    except ValueError as exc:
        problems.append(f"{label('trusted_proxy')}: {exc}")
    if cfg.public_url is not None:
        try:
            cfg.public_url = normal_public_url(cfg.public_url)
        except ValueError as exc:
            problems.append(f"{label('public_url')}: {exc}")
    for location in cfg.jwks:
        try:
            check_jwks_location(location)
        except ValueError as exc:
            problems.append(f"{label('jwks')}: {exc}")
    return problems


def parse_config(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """The settings from `argv`, `environ` (default: os.environ) and the config file they name;
    a usage error, or any problem of the settings, exits (status 2) with every problem, as argparse does."""
    environ = dict(os.environ if environ is None else environ)
    parser = _parser()
    args = parser.parse_args(argv)
    flags = {name: flag for name in _FIELDS if (flag := getattr(args, name)) is not None}
    cfg, problems = _read(args.config or environ.get("PARLEY_CONFIG"), environ, flags)
    if problems:
        parser.exit(2, "".join(f"{parser.prog}: error: {p}\n" for p in problems))
    return cfg


def check_main(argv: list[str]) -> int:
    """`parley check-config FILE`: every problem of the file as the server would refuse it at start
    (status 2), or `FILE: ok`; nothing is started, opened or written."""
    parser = argparse.ArgumentParser(prog="parley check-config",
                                     description="Check a Parley config file without starting anything.")
    parser.add_argument("file", help="the TOML config file")
    path = parser.parse_args(argv).file
    _, problems = _read(path, {}, {})
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 2
    print(f"{path}: ok")
    return 0


def store_kind(store: str) -> str | None:
    """"sqlite" or "postgresql" for a valid `--store`, else None."""
    if store == "sqlite":
        return "sqlite"
    if urlsplit(store).scheme in ("postgresql", "postgres"):
        return "postgresql"
    return None


def redacted(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def normal_public_url(url: str) -> str:
    """`--public-url` as `scheme://host[:port][/path]`, no trailing slash; refused unless http(s) with a host."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None \
            or parts.query or parts.fragment:
        raise ValueError(f"{url!r} is not an http(s) URL like https://chat.example.com")
    if parts.port == 0:  # parts.port raises ValueError for a port that is not a number
        raise ValueError(f"{url!r} names port 0")
    return urlunsplit((parts.scheme, parts.netloc.lower(), parts.path.rstrip("/"), "", ""))
