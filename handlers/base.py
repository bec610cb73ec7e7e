"""APIHandler: auth, bounded JSON bodies, CORS, and error rendering per surface."""
from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterable
from typing import Any, cast

import orjson
from tornado import httputil, web
from tornado.ioloop import IOLoop

from auth import Authenticator, AuthError, Identity
from handlers.errors import ApiError, ExactError, error_body
from runs.files import Files
from runs.manager import (
    Draining,
    Forbidden,
    Invalid,
    PlanRefused,
    RunError,
    RunManager,
    StartRequest,
    ThreadBusy,
    TooManyRunning,
)
from store.tasks import TaskRow
from telemetry import context

MAX_JSON_BODY = 1024 * 1024
LINGER_MAX_BODY = 64 * 1024 * 1024  # larger declared bodies are refused at once
LINGER_S = 2.0
CORS_HEADERS = (
    "Authorization, X-Internal-Key, X-User-Id, Content-Type, Last-Event-ID, traceparent, tracestate, baggage, "
    "Mcp-Session-Id, MCP-Protocol-Version"
)
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
ProxyNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def proxy_networks(cidrs: Iterable[str]) -> tuple[ProxyNetwork, ...]:
    """The `--trusted-proxy` networks (a bare address is one host); ValueError for a malformed one."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(request: httputil.HTTPServerRequest, proxies: tuple[ProxyNetwork, ...]) -> str:
    """The client's address, for rate limits and logs.

    The direct peer, unless it is one of the trusted proxies: then the rightmost
    X-Forwarded-For entry that is not itself a trusted proxy (every proxy appends
    the peer it saw, so entries left of it may be whatever the client sent).
    Without trusted proxies, forwarding headers are ignored.
    """
    peer = request.remote_ip or ""
    if not proxies:
        return peer
    hop = _address(peer)
    if hop is None or not any(hop in net for net in proxies):
        return peer
    entries = [e for value in request.headers.get_list("X-Forwarded-For") for e in value.split(",")]
    for entry in reversed(entries):
        address = _address(entry)
        if address is None:  # not written by a trusted proxy: the nearest hop we know is the client
            break
        hop = address
        if not any(hop in net for net in proxies):
            break
    return str(hop)


def host_name(host: str) -> str:
    """The name in a Host header or a listener address, lower case, without the port: `[::1]:80` -> `[::1]`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    if host.count(":") > 1:  # a bare IPv6 address (a listener's --host)
        return f"[{host}]"
    return host.partition(":")[0].rstrip(".")


@web.stream_request_body
class APIHandler(web.RequestHandler):
    """Base of every API route.

    Subclasses set `surface` (the error dialect), `auth` ("either", "jwt"
    or "none"), `starts_runs` (503 first while draining) and `max_body`.
    """

    surface = "native"
    auth = "either"
    starts_runs = False
    max_body = MAX_JSON_BODY

    identity: Identity | None = None
    trace_id: str | None = None

    def initialize(self) -> None:
        self._body = bytearray()
        self._too_large = False
        self._linger: object | None = None
        self._t0 = time.monotonic()

    # -- dependencies -------------------------------------------------------

    @property
    def runs(self) -> RunManager:
        return cast(RunManager, self.settings["runs"])

    @property
    def files(self) -> Files:
        return cast(Files, self.settings["files"])

    @property
    def authenticator(self) -> Authenticator:
        return cast(Authenticator, self.settings["auth"])

    @property
    def user_id(self) -> str:
        assert self.identity is not None
        return self.identity.user_id

    @property
    def client_ip(self) -> str:
        """The client's address for rate limits and logs (X-Forwarded-For only from `--trusted-proxy` peers)."""
        return client_address(self.request, self.settings.get("trusted_proxies", ()))

    @property
    def host_allowed(self) -> bool:
        """Whether the request's Host names this server: `--allowed-host`, the public URL's host, the loopback
        names, the listener's host, or the address the connection arrived at (a DNS rebinding attack has a name)."""
        name = host_name(self.request.host)
        if name in self.settings.get("allowed_hosts", ()):
            return True
        address = _address(name)
        return address is not None and address == _address(self._local_address() or "")

    def _local_address(self) -> str | None:
        sock = getattr(getattr(self.request.connection, "stream", None), "socket", None)
        try:
            return str(sock.getsockname()[0]) if sock is not None else None
        except OSError:
            return None

    # -- request life ---------------------------------------------------------

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        origin = self.request.headers.get("Origin")
        if origin and self._origin_allowed(origin):
            # Never Allow-Credentials: tokens travel in headers, not cookies.
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Expose-Headers", "Retry-After, Location, Mcp-Session-Id")
        self.add_header("Vary", "Origin")

    def _origin_allowed(self, origin: str) -> bool:
        public: str | None = self.settings.get("public_origin")
        if public is not None:
            if origin == public:
                return True
        elif self.host_allowed and origin == f"{self.request.protocol}://{self.request.host}":
            return True  # without --public-url: the origin the page was loaded from, if its Host names us
        patterns: list[re.Pattern[str]] = self.settings.get("cors_patterns", [])
        return any(p.fullmatch(origin) for p in patterns)

    async def options(self, *args: Any, **kwargs: Any) -> None:
        """CORS preflight."""
        self.set_header("Access-Control-Allow-Headers", CORS_HEADERS)
        self.set_header("Access-Control-Allow-Methods", CORS_METHODS)
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()

    async def prepare(self) -> None:
        tp = self.request.headers.get("traceparent", "").strip().lower()
        m = _TRACEPARENT.match(tp)
        if m:
            self.trace_id = m.group(1)
            # This request's own asyncio task, and the runs it starts: what they log carries the trace id.
            context.trace_id.set(self.trace_id)
        if self.request.method == "OPTIONS":
            return
        if self.starts_runs and self.runs.draining:
            raise ApiError(503, "the server is draining; try again on another instance", "DRAINING")
        if self.auth != "none":
            await self.authenticate()
        length = self.request.headers.get("Content-Length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise ApiError(400, "invalid Content-Length") from None
            if declared > self.max_body:
                if declared > LINGER_MAX_BODY:
                    self._too_large = True
                    raise self._payload_too_large()
                self._overflow()

    async def authenticate(self) -> None:
        h = self.request.headers
        try:
            self.identity = await self.authenticator.authenticate(
                h.get("Authorization"), h.get("X-Internal-Key"), h.get("X-User-Id"), jwt_only=self.auth == "jwt"
            )
        except AuthError as exc:
            raise ApiError(401, str(exc), "UNAUTHORIZED") from None

    def data_received(self, chunk: bytes) -> None:
        if self._too_large:
            return  # discarded, never buffered
        if len(self._body) + len(chunk) > self.max_body:
            self._overflow()
            return
        self._body.extend(chunk)

    def _payload_too_large(self) -> ApiError:
        return ApiError(413, f"request body larger than {self.max_body} bytes", "PAYLOAD_TOO_LARGE")

    def _overflow(self) -> None:
        """The body is too large: discard the rest while it arrives, answer 413 when it ends.

        Answering at once and closing would make the kernel reset the
        connection over the unread bytes, and the client might never read
        the 413; so the answer waits for the end of the body, at most
        LINGER_S, then Tornado closes the connection.
        """
        self._too_large = True
        self._body = bytearray()
        if self._linger is None:
            self._linger = IOLoop.current().call_later(LINGER_S, self._answer_too_large)

    def _answer_too_large(self) -> None:
        self._linger = None
        if not self._finished:
            err = self._payload_too_large()
            self.send_error(413, exc_info=(ApiError, err, None))

    def on_finish(self) -> None:
        if self._linger is not None:
            IOLoop.current().remove_timeout(self._linger)
            self._linger = None

    # -- bodies ---------------------------------------------------------------

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object: 400 when it is not JSON, 422 when it is not an object."""
        if self._finished:
            raise web.Finish()
        if self._too_large:
            raise self._payload_too_large()
        if not self._body:
            raise ApiError(400, "a JSON body is required")
        try:
            body = orjson.loads(bytes(self._body))
        except orjson.JSONDecodeError:
            raise ApiError(400, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(422, "the body must be a JSON object")
        return body

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(value))

    # -- run starts -------------------------------------------------------------

    # How this surface words a refused start (SPEC 4's order: 503 → 403 → 422 → 409; then 429 when
    # the user has the plan's `max_running` runs going); the body itself is rendered by write_error
    # in the surface's shape.
    busy_message = "the thread already has a running task"
    busy_code: str | None = None
    busy_id_key = "taskId"  # the field naming the live task in a 409
    plan_details = False  # a plan refusal carries {plan, runsPerDay, runsToday | agentId} (job surface)

    async def start_run(self, req: StartRequest) -> TaskRow:
        """`runs.start_run`, its refusals turned into this surface's errors."""
        try:
            return await self.runs.start_run(req)
        except RunError as exc:
            raise self.run_refusal(exc) from None

    def run_refusal(self, exc: RunError) -> ApiError:
        """The error answering a refused run start; a surface overrides the cases it words differently."""
        if isinstance(exc, Draining):
            return ApiError(503, "the server is draining; try again on another instance", "DRAINING")
        if isinstance(exc, PlanRefused):
            return ApiError(403, str(exc), exc.code, **(exc.details if self.plan_details else {}))
        if isinstance(exc, Forbidden):
            return ApiError(403, str(exc), "FORBIDDEN")
        if isinstance(exc, ThreadBusy):
            return ApiError(409, self.busy_message, self.busy_code, **{self.busy_id_key: exc.task_id})
        if isinstance(exc, TooManyRunning):
            return ApiError(429, str(exc), exc.code, retry_after=exc.retry_after,
                            **(exc.details if self.plan_details else {}))
        if isinstance(exc, Invalid):
            return ApiError(422, str(exc), "VALIDATION_ERROR")
        return ApiError(500, "internal server error")

    # -- errors ---------------------------------------------------------------

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ExactError):
            self.set_status(exc.status)
            self.set_header("Content-Type", "application/json")
            self.finish(orjson.dumps(exc.body))
            return
        if isinstance(exc, ApiError):
            status, message, code, extra = exc.status, exc.message, exc.code, exc.extra
        elif isinstance(exc, web.HTTPError):
            status, message, code, extra = exc.status_code, exc.log_message or httputil.responses.get(exc.status_code, "error"), None, {}
        else:
            status, message, code, extra = status_code, httputil.responses.get(status_code, "error"), None, {}
            if status >= 500:
                message = "internal server error"
        if status != self.get_status():
            self.set_status(status)
        if self.surface == "accounts":
            extra = {**extra, "instance": self.request.path}
        body, ctype = error_body(self.surface, status, message, code, extra)
        self.set_header("Content-Type", ctype)
        if status == 429 and "retry_after" in extra:
            self.set_header("Retry-After", str(extra["retry_after"]))
        self.finish(orjson.dumps(body))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, ApiError):
            if self._finished:
                return
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            return
        super().log_exception(typ, value, tb)


class NotFoundHandler(APIHandler):
    """Unknown routes: 404 in the native error shape."""

    auth = "none"

    async def prepare(self) -> None:
        await super().prepare()
        raise ApiError(404, "no such route")
