"""Parley's settings: flags, then the environment, then the TOML file named by `--config`.

Every flag also reads `PARLEY_<FLAG>` from the environment (lists comma separated) and the
same key from the config file; flags win over the environment, the environment over the file.
Tables of the file that are not settings ([llm.*], [[agents]], [[mcp_servers]], …) are kept
in `Config.extra` for the parts of the server that read them.
"""
from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from auth.jwks import check_location as check_jwks_location
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


_LIST_FIELDS = {"jwks", "cors_origin", "allowed_host", "trusted_proxy"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_FIELDS = {f.name: f for f in fields(Config) if f.name != "extra"}
_SCALARS: dict[str, Any] = {"int": int, "float": float}


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in _TRUE | _FALSE:
        raise ValueError(f"not a boolean: {value!r}")
    return text in _TRUE


def _coerce(name: str, value: Any) -> Any:
    """`value` (from a flag, the environment or the file) as the type of the setting `name`."""
    kind = str(_FIELDS[name].type)
    if name in _LIST_FIELDS:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return [str(v) for v in value]
    if kind == "bool":
        return _boolean(value)
    if kind.startswith("Path"):
        return Path(value)
    return _SCALARS.get(kind, str)(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="server.py",
        description="Parley: a self-hosted agent run server. Every flag also reads PARLEY_<FLAG> "
        "(e.g. PARLEY_INTERNAL_KEY; lists comma-separated) and the same key in the --config TOML file; "
        "flags win over the environment, the environment over the file.",
    )
    for f in _FIELDS.values():
        flag = "--" + f.name.replace("_", "-")
        env = "PARLEY_" + f.name.upper()
        if f.name in _LIST_FIELDS:
            parser.add_argument(flag, action="append", default=None, help=f"{f.metadata['help']} [{env}]")
        elif str(f.type) == "bool":
            parser.add_argument(flag, action="store_const", const=True, default=None,
                                help=f"{f.metadata['help']} (default: off) [{env}=1]")
        else:
            parser.add_argument(flag, default=None, help=f"{f.metadata['help']} (default: {f.default}) [{env}]")
    return parser


def _file_values(path: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The settings in the TOML file; its other tables go to `extra`."""
    with open(path, "rb") as fh:
        doc = tomllib.load(fh)
    values: dict[str, Any] = {}
    for key, value in doc.items():
        name = key.replace("-", "_")
        if name == "store" and isinstance(value, dict):  # [store] url = "postgresql://…"
            value = value.get("url", "sqlite")
        if name in _FIELDS and name != "config":
            values[name] = value
        else:
            extra[key] = value  # tables: [llm.*], [[agents]], [[mcp_servers]], [titles], [transcribe]
    return values


def _given_values(args: argparse.Namespace, environ: dict[str, str], extra: dict[str, Any]) -> dict[str, Any]:
    """Every setting given anywhere, by name: the file's, overridden by the environment's, by the flags'."""
    config_path: str | None = args.config or environ.get("PARLEY_CONFIG")
    values = _file_values(config_path, extra) if config_path else {}
    values.update({name: environ[env] for name in _FIELDS if (env := "PARLEY_" + name.upper()) in environ})
    values.update({name: flag for name in _FIELDS if (flag := getattr(args, name)) is not None})
    return values


def _checked(cfg: Config) -> None:
    """Raise ValueError with the message a user reads when settings do not fit (each alone or together)."""
    if cfg.log_format not in ("text", "json"):
        raise ValueError("--log-format must be text or json")
    _checked_addresses(cfg)
    if store_kind(cfg.store) is None:
        raise ValueError(f"--store must be sqlite or a postgresql:// URL, not {redacted(cfg.store)!r}")
    if cfg.lease_s < 1:
        raise ValueError("--lease-s must be at least 1 second")
    if cfg.workers < 1:
        raise ValueError("--workers must be 1 or more")
    if cfg.workers > 1 and store_kind(cfg.store) == "sqlite":
        raise ValueError("--workers needs the PostgreSQL store (--store postgresql://…): SQLite has one writer, "
                         "in one process; run one process per data dir")


def _checked_addresses(cfg: Config) -> None:
    """--trusted-proxy, --public-url (made normal here) and --jwks."""
    try:
        proxy_networks(cfg.trusted_proxy)
    except ValueError as exc:
        raise ValueError(f"--trusted-proxy: {exc}") from None
    if cfg.public_url is not None:
        try:
            cfg.public_url = normal_public_url(cfg.public_url)
        except ValueError as exc:
            raise ValueError(f"--public-url: {exc}") from None
    for location in cfg.jwks:
        try:
            check_jwks_location(location)
        except ValueError as exc:
            raise ValueError(f"--jwks: {exc}") from None


def parse_config(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """The settings from `argv`, `environ` (default: os.environ) and the config file they name;
    a usage error exits (status 2) with the message, as argparse does."""
    environ = dict(os.environ if environ is None else environ)
    parser = _parser()
    args = parser.parse_args(argv)
    cfg = Config()
    for name, value in _given_values(args, environ, cfg.extra).items():
        try:
            setattr(cfg, name, _coerce(name, value))
        except (TypeError, ValueError):
            parser.error(f"invalid value for {name}: {value!r}")
    try:
        _checked(cfg)
    except ValueError as exc:
        parser.error(str(exc))
    return cfg


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
