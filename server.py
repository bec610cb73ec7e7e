"""Parley: the settings (config.py) -> make_app -> listen; drain on SIGTERM.

    parley [serve] [--host 127.0.0.1] [--port 8090] [--data-dir ./data] ...   (python server.py … in the checkout)
    parley admin … | backup DEST | check-config FILE    (the commands: parley.py)
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import signal
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.netutil import bind_sockets

from accounts import Accounts
from agents import AgentRegistry, knowledge
from agents.mcp_client import McpTools
from auth import Authenticator
from auth.keys import ACCOUNTS_PEPPER, ATTACHMENT_URL, STREAM_TOKEN, secret, secrets_for, signing_key
from auth.ratelimit import Windows
from auth.signed_urls import UrlSigner
from config import Config, parse_config, redacted
from handlers import accounts as account_routes
from handlers import agent_api, app, jobs, mcp, native, openapi, page
from handlers import base as base_handlers
from handlers.agent_api.attachments import transcribe_limit
from handlers.jobs.documents import document_settings
from handlers.jobs.jobs import job_limits
from handlers.metrics import Metrics, MetricSources, RouteTemplates, method_label
from handlers.metrics import default_handlers as metrics_handlers
from handlers.streaming import StreamSlots
from parley import VERSION, program
from runs.files import Files
from runs.hub import EventHub
from runs.manager import RunManager
from runs.plans import PlanConfig
from store import Database, make_store
from store.lock import DataDirInUse, DataDirLock, lock_data_dir
from telemetry import logs
from telemetry.counters import RequestCounts
from workers import Supervisor, WorkerSlot

STREAM_GRACE_S = 5.0
log = logging.getLogger("parley")


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _origin_pattern(origin: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in origin.rstrip("/").split("*")))


# Answers that are part of the design, not failures of this server: 501 (a backend that is not
# configured), 502 (the configured backend failed), 503 (draining).  ERROR is kept for the rest.
_EXPECTED_5XX = frozenset({501, 502, 503})


class RequestLog:
    """One structured line per request: method, path, status, duration, client address, user, trace id;
    and the request counted for /metrics under its route template (`routes`), never its path."""

    def __init__(self, fmt: str, trusted_proxies: tuple[base_handlers.ProxyNetwork, ...] = (),
                 counts: RequestCounts | None = None, routes: RouteTemplates | None = None) -> None:
        self.fmt = fmt
        self.trusted_proxies = trusted_proxies
        self.logger = logging.getLogger("parley.access")
        self.counts = counts
        self.routes = routes

    def __call__(self, handler: web.RequestHandler) -> None:
        status = handler.get_status()
        if self.counts is not None and self.routes is not None:
            self.counts.count(self.routes.of(handler), method_label(handler.request.method), status,
                              handler.request.request_time())
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 or status in _EXPECTED_5XX else logging.ERROR
        if not self.logger.isEnabledFor(level):
            return
        identity = getattr(handler, "identity", None)
        request = handler.request
        ip = base_handlers.client_address(request, self.trusted_proxies) if hasattr(request, "remote_ip") else None
        record = {
            "method": handler.request.method,
            "path": handler.request.path,  # never the query: it may hold a stream token
            "status": status,
            "duration_ms": round(handler.request.request_time() * 1000, 2),
            "ip": ip,
            "user": identity.user_id if identity is not None else None,
            "trace_id": getattr(handler, "trace_id", None),
        }
        line = "%s %s %s %.1fms"
        args = (record["status"], record["method"], record["path"], record["duration_ms"])
        if self.fmt == "json":  # the fields go into the record's JSON object (telemetry/logs.py)
            self.logger.log(level, line, *args, extra={"fields": record})
        else:
            extra = "".join(f" {k}={record[k]}" for k in ("ip", "user", "trace_id") if record[k])
            self.logger.log(level, line + "%s", *args, extra)


class NoDelayHTTPServer(HTTPServer):
    """Every connection keeps TCP_NODELAY for its whole life.  A response or an SSE frame is whole
    when it is written, so Nagle's algorithm could only hold it back; Tornado would turn it on and
    off around every request instead (two system calls a request, 4 % of a short run's CPU)."""

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        stream.set_nodelay(True)
        stream.set_nodelay = _nodelay_stays  # type: ignore[method-assign]
        super().handle_stream(stream, address)


def _nodelay_stays(value: bool) -> None:
    """The connection's TCP_NODELAY stays on (NoDelayHTTPServer)."""


class Parley:
    """The whole server: store, hub, run manager, auth and the Tornado application."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.data_dir = config.data_dir.resolve()
        self.trusted_proxies = base_handlers.proxy_networks(config.trusted_proxy)
        self.db = make_store(config.store, self.data_dir)
        self.hub = EventHub()
        self.streams = StreamSlots(config.max_streams_per_user)
        self.requests = RequestCounts()
        self.agents = AgentRegistry()
        self.agents.configure(config.extra)  # [llm.*] and [[agents]]: a bad table fails here
        self.agents.tools["knowledge_search"] = knowledge.make_tool(self.db, self.data_dir)
        self.windows = Windows(self.db)  # rate limits: in memory, or in the store that instances share
        self.document_settings = document_settings(config.extra, self.windows)  # [documents]: a bad table fails here
        plans = PlanConfig.from_extra(config.extra, self.agents.tools)  # [plans.*], [credits]: a bad table fails here
        self.runs = RunManager(self.db, self.hub, self.agents, demo_delay_ms=config.demo_delay_ms, plans=plans,
                               lease_s=config.lease_s)
        self.files = Files(self.db, self.data_dir)
        self.metrics = Metrics(MetricSources(self.runs, self.db, self.streams, self.requests, self.agents.providers, VERSION))
        self.auth: Authenticator | None = None
        self.url_signer: UrlSigner | None = None
        self.mcp_tools: McpTools | None = None
        self.accounts: Accounts | None = None
        self.app: web.Application | None = None
        self.server: HTTPServer | None = None
        self.port = config.port
        self._sockets: list[socket.socket] = []
        self._stopped = asyncio.Event()

    async def open(self) -> web.Application:
        """Open the store, recover interrupted runs, build the application."""
        self._private_data_dir()
        await self.db.open()
        keys = secrets_for(self.db, self.data_dir / "keys")  # in the store when instances share it
        signing = await signing_key(keys)
        self.url_signer = UrlSigner(await secret(keys, ATTACHMENT_URL))
        self.auth = Authenticator(
            signing,
            await secret(keys, STREAM_TOKEN),
            issuer=f"parley:{signing.kid}",
            audience=self.config.jwt_audience,
            jwks=self.config.jwks,
            internal_key=self.config.internal_key,
            expected_issuer=self.config.jwt_issuer,
        )
        settings = self.config.extra.get("accounts", {})
        self.accounts = Accounts(self.db, self.auth, self.data_dir, self.config.extra.get("smtp"),
                                 admins=settings.get("admins", []), argon2=settings.get("argon2"),
                                 public_url=self.public_url, redirect_origins=settings.get("redirect_origins"),
                                 pepper=await secret(keys, ACCOUNTS_PEPPER), windows=self.windows)
        await self.runs.load_agents()
        self.mcp_tools = await McpTools.start(self.config.extra.get("mcp_servers", []), self.agents)
        await self.runs.recover()
        self.app = make_app(self)
        return self.app

    def _private_data_dir(self) -> None:
        """The data dir is 0700 and the store's files 0600, whatever the umask of this process (SPEC 13).

        The server process runs with umask 077 (`main`), which makes every other file
        Parley writes 0600; SQLite gives the -wal and -shm files the mode of parley.db.
        """
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not isinstance(self.db, Database):
            return
        try:
            os.close(os.open(self.db.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        store_files = [self.db.path, *(self.db.path.with_name(self.db.path.name + s) for s in ("-wal", "-shm"))]
        for path, mode in ((self.data_dir, 0o700), *((p, 0o600) for p in store_files)):
            try:
                if path.exists() and path.stat().st_mode & 0o077:
                    path.chmod(mode)
            except OSError as exc:  # not ours to change (a mounted volume): say so, and go on
                log.warning("could not make %s private (mode %o): %s", path, mode, exc)

    def bind(self, sockets: list[socket.socket] | None = None) -> None:
        """Take the port first, so that a busy port fails before anything is opened (or the
        sockets a supervisor bound for all its workers, `--workers`)."""
        self._sockets = sockets or bind_listeners(self.config)
        self.port = self._sockets[0].getsockname()[1]

    def listen(self) -> None:
        assert self.app is not None
        if not self._sockets:
            self.bind()
        self.server = NoDelayHTTPServer(
            self.app,
            idle_connection_timeout=self.config.idle_timeout,
            body_timeout=60,
            max_body_size=base_handlers.LINGER_MAX_BODY,
            max_header_size=64 * 1024,
        )
        self.server.add_sockets(self._sockets)

    @property
    def url(self) -> str:
        return listen_url(self.config.host, self.port)

    @property
    def public_url(self) -> str:
        """Where people reach this server (links in mail): `--public-url`, else the listener's own URL."""
        return self.config.public_url or self.url

    @property
    def allowed_hosts(self) -> frozenset[str]:
        """Host names the unauthenticated account routes answer (others: 421)."""
        names = {*self.config.allowed_host, "localhost", "127.0.0.1", "[::1]", self.config.host,
                 urlsplit(self.public_url).netloc}
        return frozenset(base_handlers.host_name(n) for n in names if n)

    async def shutdown(self) -> None:
        """Graceful drain (SPEC section 6), then close the store."""
        log.info("draining: new runs refused, %d live run(s) get %ss", self.runs.live_runs, self.config.drain_timeout)
        await self.runs.drain(self.config.drain_timeout)
        # Streams of ended runs close after their terminal frame (on a shared store, once the
        # event bus has brought it back); those of parked runs are ended here.  Slow readers
        # get a few seconds to take the rest.
        try:
            await asyncio.wait_for(self.db.published(), STREAM_GRACE_S)
        except TimeoutError:
            log.warning("the event bus did not bring back this instance's last events within %ss", STREAM_GRACE_S)
        self.hub.close_all()
        if not await self.streams.wait_idle(STREAM_GRACE_S):
            log.warning("%d stream(s) still open after %ss; closing them", self.streams.total, STREAM_GRACE_S)
        if self.server is not None:
            self.server.stop()
            await asyncio.wait_for(self.server.close_all_connections(), timeout=5)
        await self.close_services()
        await self.db.close()
        log.info("drained; store closed")
        self._stopped.set()

    async def close(self) -> None:
        """Stop at once (tests): runs end `failed`/`shutdown`, the store is closed."""
        await self.runs.drain(0)
        self.hub.close_all()
        await self.close_services()
        await self.db.close()

    async def close_services(self) -> None:
        """Close what the server holds open besides the store: MCP sessions, LLM clients, password hashers."""
        if self.accounts is not None:
            self.accounts.close()
        if self.mcp_tools is not None:
            await self.mcp_tools.close()
            self.mcp_tools = None
        for provider in self.agents.providers.values():
            await provider.aclose()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


def make_app(parley: Parley) -> web.Application:
    cfg = parley.config
    origins = cfg.cors_origin or ["http://localhost:3000"]
    handlers: list[Any] = [
        *app.default_handlers,
        *native.default_handlers,
        *jobs.default_handlers,
        *mcp.default_handlers,
        *account_routes.default_handlers,
        *(account_routes.dev_handlers if cfg.dev else []),
        *agent_api.default_handlers,
        *openapi.default_handlers,
        *page.default_handlers,
        *(metrics_handlers if cfg.metrics_token or cfg.internal_key else []),  # else 404: nothing could get in
    ]
    return web.Application(
        handlers,
        default_handler_class=base_handlers.NotFoundHandler,
        runs=parley.runs,
        hub=parley.hub,
        auth=parley.auth,
        version=VERSION,
        default_agent=cfg.default_agent,
        cors_patterns=[_origin_pattern(o) for o in origins],
        # the own origin for CORS: --public-url's when it is set, else the page's (when its Host names us)
        public_origin=_origin_of(cfg.public_url) if cfg.public_url else None,
        allowed_hosts=parley.allowed_hosts,
        trusted_proxies=parley.trusted_proxies,
        dev=cfg.dev,
        stream_slots=parley.streams,
        files=parley.files,
        accounts=parley.accounts,
        job_limits=job_limits(parley.windows),
        **parley.document_settings,
        url_signer=parley.url_signer,
        transcribe_limit=transcribe_limit(parley.windows),
        keepalive_s=cfg.keepalive_s,
        metrics=parley.metrics,
        metrics_token=cfg.metrics_token,
        log_function=RequestLog(cfg.log_format, parley.trusted_proxies, parley.requests, RouteTemplates(handlers)),
        compress_response=False,
        xsrf_cookies=False,
    )


def setup_logging(cfg: Config) -> None:
    """Every record to stderr, as text lines or one JSON object each (`--log-format json`); with
    `--workers` each names its process.  Forked workers keep what the supervisor installed."""
    logs.install(getattr(logging, cfg.log_level.upper(), logging.INFO), json=cfg.log_format == "json",
                 pid=cfg.workers > 1)


def bind_listeners(cfg: Config, port: int | None = None, reuse_port: bool = False) -> list[socket.socket]:
    family = socket.AF_INET if ":" not in cfg.host else socket.AF_UNSPEC
    return bind_sockets(cfg.port if port is None else port, cfg.host, family=family, reuse_port=reuse_port)


def listen_url(host: str, port: int) -> str:
    host = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def start_line(cfg: Config, port: int) -> str:
    """The one line printed once the server listens: where its data is, its store, and its web page."""
    data_dir = cfg.data_dir.resolve()
    store = f"sqlite (WAL) {data_dir / 'parley.db'}" if cfg.store == "sqlite" else f"postgresql {redacted(cfg.store)}"
    workers = f" · {cfg.workers} workers" if cfg.workers > 1 else ""
    return f"Parley {VERSION} · data {data_dir} · store {store}{workers} · open {listen_url(cfg.host, port)}/ui/"


class _Stop:
    """Drains the server on the first SIGTERM or SIGINT (SPEC 6); a second signal exits at once.

    A worker of `--workers` drains once whatever else it is sent: its supervisor is the one
    that escalates (workers.py), and one stop may reach a worker twice (Ctrl-C reaches the
    whole process group, and the supervisor passes it on)."""

    def __init__(self, parley: Parley, worker: WorkerSlot | None) -> None:
        self.parley = parley
        self.worker = worker
        self.seen = 0
        self.drain: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.__call__, signal.Signals(sig).name)
        if worker is not None:
            loop.add_reader(worker.supervisor_fd, self._supervisor_gone)

    def __call__(self, why: str) -> None:
        self.seen += 1
        if self.seen == 1:
            log.info("received %s", why)
            self.drain = asyncio.ensure_future(self.parley.shutdown())
        elif self.worker is None:
            log.warning("second signal: exiting at once")
            os._exit(1)

    def _supervisor_gone(self) -> None:
        assert self.worker is not None
        asyncio.get_running_loop().remove_reader(self.worker.supervisor_fd)
        log.warning("the supervisor of this worker is gone: draining")
        self("the end of the supervisor")


async def serve(cfg: Config, worker: WorkerSlot | None = None) -> int:
    """Serve until a signal has drained the server; `worker`: as one of the processes of `--workers`."""
    try:
        parley = Parley(cfg)
    except ValueError as exc:  # a config table that does not fit
        print(f"{program()}: error: config: {exc}", file=sys.stderr)
        return 2
    try:
        owner = _own_data_dir(parley)
    except DataDirInUse as exc:
        print(f"{program()}: error: {exc}", file=sys.stderr)
        return 1
    try:
        parley.bind(worker.sockets if worker is not None else None)
        try:
            await parley.open()
        except BaseException:
            await parley.db.close()
            raise
        parley.listen()
        # What start-up made (the imported libraries' classes, the app) lives as long as the process:
        # out of the collector's sight, a collection no longer walks some 140,000 objects that never die
        # (measured: GC time per 960 short runs 4.0 s → 0.25 s, CPU 9.3 s → 6.4 s; bench/README.md).
        gc.collect()
        gc.freeze()
        _Stop(parley, worker)  # kept alive by the loop's signal handlers
        if worker is None:
            print(start_line(cfg, parley.port), flush=True)
        else:
            worker.ready()  # the supervisor prints the start line once every worker listens
        await parley.wait_stopped()
    finally:
        if owner is not None:
            owner.release()
    return 0


def _own_data_dir(parley: Parley) -> DataDirLock | None:
    """The data dir's lock with the SQLite store (store/lock.py); none with PostgreSQL, whose
    instances (and the workers of one) may share a data dir: it holds no store of theirs."""
    return lock_data_dir(parley.data_dir) if isinstance(parley.db, Database) else None


def serve_workers(cfg: Config) -> int:
    """`--workers N` (workers.py): the sockets are bound here, one per worker on the one port, and
    the workers forked before this process has an event loop, a thread or a store connection;
    each worker opens its own."""
    if cfg.port != 0:
        for sock in bind_listeners(cfg):  # SO_REUSEPORT would share a port another server holds so
            sock.close()
    first = bind_listeners(cfg, reuse_port=True)
    port = first[0].getsockname()[1]
    listeners = [first, *(bind_listeners(cfg, port, reuse_port=True) for _ in range(1, cfg.workers))]
    supervisor = Supervisor(listeners, work=lambda slot: asyncio.run(serve(cfg, slot)),
                            on_ready=lambda: print(start_line(cfg, port), flush=True))
    try:
        return supervisor.run()
    finally:
        for sock in (s for sockets in listeners for s in sockets):
            sock.close()


def admin(argv: list[str]) -> int:
    """`parley admin …` (parley.py): the admin CLI (accounts/admin.py) with the server's data directory
    and plans: `--config` (or PARLEY_CONFIG) is read as the server reads it; the admin's --data-dir wins."""
    from accounts.admin import admin_main, parser

    config = getattr(parser().parse_args(argv), "config", None)  # usage errors and --help end here
    try:
        cfg = parse_config(["--config", str(config)] if config is not None else [])
        plans = PlanConfig.from_extra(cfg.extra, {*AgentRegistry().tools, "knowledge_search"})
    except (OSError, ValueError) as exc:  # a missing or bad config file
        print(f"{program()} admin: error: config: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(admin_main(argv, cfg.data_dir, plans=plans, store=cfg.store))


def run(argv: list[str]) -> int:
    """`parley serve [flags]` (parley.py): the settings, then one process serving (or `--workers N` of them)."""
    cfg = parse_config(argv)
    setup_logging(cfg)
    if cfg.workers > 1:
        return serve_workers(cfg)
    return asyncio.run(serve(cfg))


if __name__ == "__main__":  # python server.py …: the parley command
    from parley import main

    sys.modules["server"] = sys.modules[__name__]  # its commands import `server`: this module, not a second copy
    sys.exit(main())
