"""The accounts surface of seed 004 under /api/v1 (SPEC section 9): RFC 7807 errors.

Sign-up, code checks and login need no credentials; they answer only requests
whose Host names this server (421 otherwise: DNS rebinding), and count their rate
limits by the client's address (`APIHandler.client_ip`).  `/auth/users` and the
profile routes take any identity (a user known only through an external JWT
or the internal key has no local account: `/users/me` answers 404).
"""
from __future__ import annotations

import ipaddress
from typing import Any, cast

from accounts import AccountError, Accounts
from accounts.checks import check_email
from accounts.errors import invalid
from handlers.accounts.problems import problem
from handlers.base import FORWARDING_HEADERS, APIHandler
from handlers.errors import ApiError

PREFIX = "/api/v1"


class AccountsHandler(APIHandler):
    """A route of the accounts service, whose refusals are answered with the status of `problems.STATUS`."""

    surface = "accounts"

    @property
    def accounts(self) -> Accounts:
        return cast(Accounts, self.settings["accounts"])

    def _handle_request_exception(self, e: BaseException) -> None:
        super()._handle_request_exception(problem(e) if isinstance(e, AccountError) else e)

    def no_content(self) -> None:
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()


class AccountsPublicHandler(AccountsHandler):
    """A route without credentials: 421 unless the request's Host names this server (SPEC 13)."""

    auth = "none"

    async def prepare(self) -> None:
        if self.request.method != "OPTIONS" and not self.host_allowed:
            raise ApiError(421, "this server does not answer for this Host; see --allowed-host",
                           "MISDIRECTED_REQUEST", title="Misdirected Request")
        await super().prepare()


class AccountsVerificationsHandler(AccountsPublicHandler):
    async def post(self) -> None:
        await self.accounts.limit_ip("signup", self.client_ip)
        email = await self.accounts.start_signup(self.json_body())
        self.write_json({"email": email}, 202)


class AccountsResendHandler(AccountsPublicHandler):
    async def post(self) -> None:
        await self.accounts.limit_ip("signup", self.client_ip)
        await self.accounts.resend(self.json_body())
        self.no_content()


class AccountsVerifyHandler(AccountsPublicHandler):
    async def post(self) -> None:
        await self.accounts.limit_ip("login", self.client_ip)
        self.write_json(await self.accounts.verify(self.json_body()))


class AccountsSessionsHandler(AccountsPublicHandler):
    async def post(self) -> None:
        await self.accounts.limit_ip("login", self.client_ip)
        self.write_json(await self.accounts.login(self.json_body()))

    async def delete(self) -> None:
        await self.accounts.logout(self.json_body())
        self.no_content()


class AccountsRefreshHandler(AccountsPublicHandler):
    async def post(self) -> None:
        await self.accounts.limit_ip("login", self.client_ip)
        self.write_json(await self.accounts.refresh(self.json_body()))


class AccountsAuthConfigHandler(AccountsPublicHandler):
    """How sign-up works here, for a sign-in page: where the codes go (`outbox` in dev mode, or `smtp`)."""

    def get(self) -> None:
        self.write_json({"mail": self.accounts.mail_delivery})


class AccountsDevCodeHandler(AccountsPublicHandler):
    """`--dev` only (the route is not there without it), with no [smtp], and only to a browser on this
    machine that talks to the server directly: the newest code in the outbox for `?email=`, so that
    the sign-in page can show it (SPEC sections 12, 13).  Behind a reverse proxy on the same host
    every client would look local, so a request that carries a forwarding header is refused."""

    def get(self) -> None:
        if not self.settings.get("dev"):
            raise ApiError(404, "no such route", "NOT_FOUND")
        direct = not any(h in self.request.headers for h in FORWARDING_HEADERS)
        if self.accounts.mail_delivery != "outbox" or not direct or not is_loopback(self.request.remote_ip):
            raise ApiError(403, "codes are shown only in dev mode (no [smtp]) to a browser on the server's machine",
                           "FORBIDDEN")
        errors: list[dict[str, str]] = []
        email = check_email(self.get_query_argument("email", None), errors)
        if errors:
            raise invalid(errors)
        code = self.accounts.dev_code(email)
        if code is None:
            raise ApiError(404, "no code was written to the outbox for this email", "NOT_FOUND")
        self.write_json({"email": email, "code": code})


def is_loopback(ip: str | None) -> bool:
    try:
        return ipaddress.ip_address(ip or "").is_loopback
    except ValueError:
        return False


class AccountsUsersLookupHandler(AccountsHandler):
    async def get(self) -> None:
        self.write_json(await self.accounts.lookup(self.user_id, self.get_query_argument("email", None)))


class AccountsMeHandler(AccountsHandler):
    async def get(self) -> None:
        self.write_json(await self.accounts.me(self.user_id))

    async def patch(self) -> None:
        self.write_json(await self.accounts.update_me(self.user_id, self.json_body()))


class AccountsUserHandler(AccountsHandler):
    async def get(self, username: str) -> None:
        self.write_json(await self.accounts.by_username(username))


class AccountsJwksHandler(AccountsHandler):
    auth = "none"

    async def get(self) -> None:
        self.set_header("Cache-Control", "public, max-age=300")
        self.write_json(self.authenticator.jwks())


default_handlers: list[Any] = [
    (rf"{PREFIX}/auth/verifications", AccountsVerificationsHandler),
    (rf"{PREFIX}/auth/verifications/resend", AccountsResendHandler),
    (rf"{PREFIX}/auth/verifications/verify", AccountsVerifyHandler),
    (rf"{PREFIX}/auth/sessions", AccountsSessionsHandler),
    (rf"{PREFIX}/auth/sessions/refresh", AccountsRefreshHandler),
    (rf"{PREFIX}/auth/config", AccountsAuthConfigHandler),
    (rf"{PREFIX}/auth/users", AccountsUsersLookupHandler),
    (rf"{PREFIX}/users/me", AccountsMeHandler),
    (rf"{PREFIX}/users/([^/]+)", AccountsUserHandler),
    # unescaped dots: the OpenAPI document shows the route's pattern as its path
    (r"/.well-known/jwks.json", AccountsJwksHandler),
    (rf"{PREFIX}/.well-known/jwks.json", AccountsJwksHandler),
]

# `--dev` only (server.py adds them): the outbox codes for the sign-in page
dev_handlers: list[Any] = [
    (rf"{PREFIX}/auth/dev-code", AccountsDevCodeHandler),
]

# -- OpenAPI (merged by handlers/openapi.py) ------------------------------------

_PROBLEM = "application/problem+json"
_JSON = "application/json"
_ERR = {"$ref": "#/components/schemas/Error"}
_TEXT = {400: "not JSON", 401: "missing or invalid credentials, or invalid code/token/password",
         403: "not allowed", 404: "not found", 409: "username taken", 413: "body too large",
         421: "the Host header does not name this server (--allowed-host)",
         422: "invalid body (errors: [{field, message}])", 429: "too many requests (Retry-After)",
         502: "the mail could not be sent"}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": _TEXT[c], "content": {_PROBLEM: {"schema": _ERR}}} for c in codes}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {_JSON: {"schema": schema}}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


_STR = {"type": "string"}
_EMAIL = {"type": "string", "format": "email", "maxLength": 254}
_NULLABLE = {"type": ["string", "null"]}
TOKENS = _obj(["access_token", "refresh_token", "expires_in", "token_type", "user"],
              access_token=_STR, refresh_token=_STR, expires_in={"type": "integer", "const": 3600},
              token_type={"const": "bearer"}, user=_obj(["id", "email"], id=_STR, email=_STR))
PROFILE = _obj(["id", "username"], id=_STR, username=_STR, avatar_url=_NULLABLE, bio=_NULLABLE)
_REFRESH = _body(_obj(["refresh_token"], refresh_token=_STR))
_PUBLIC: list[Any] = []

OPENAPI: dict[str, dict[str, dict[str, Any]]] = {
    f"{PREFIX}/auth/verifications": {"post": {
        "summary": "Start a sign-up: mails a 6-digit code (202 also for an email that has an account)",
        "security": _PUBLIC,
        "requestBody": _body(_obj(["username", "email", "password"],
                                  username={"type": "string", "pattern": "^[A-Za-z0-9_]{3,30}$"}, email=_EMAIL,
                                  password={"type": "string", "minLength": 8, "maxLength": 1024},
                                  redirect_to={"type": "string", "format": "uri"})),
        "responses": {"202": _ok("code mailed", _obj(["email"], email=_STR)),
                      **_errors(400, 409, 421, 422, 429, 502)}}},
    f"{PREFIX}/auth/verifications/resend": {"post": {
        "summary": "Mail a new code (at most one mail a minute per email; 204 either way)", "security": _PUBLIC,
        "requestBody": _body(_obj(["email"], email=_EMAIL)),
        "responses": {"204": {"description": "accepted"}, **_errors(400, 421, 422, 429, 502)}}},
    f"{PREFIX}/auth/verifications/verify": {"post": {
        "summary": "Check the code, create the account, sign in", "security": _PUBLIC,
        "requestBody": _body(_obj(["email", "token"], email=_EMAIL, token={"type": "string", "pattern": "^[0-9]{6}$"})),
        "responses": {"200": _ok("tokens", TOKENS), **_errors(400, 401, 409, 421, 422, 429)}}},
    f"{PREFIX}/auth/sessions": {
        "post": {"summary": "Sign in", "security": _PUBLIC,
                 "requestBody": _body(_obj(["email", "password"], email=_EMAIL, password=_STR)),
                 "responses": {"200": _ok("tokens", TOKENS), **_errors(400, 401, 421, 422, 429)}},
        "delete": {"summary": "Sign out: revokes the refresh token's family (204 also for an unknown token)",
                   "security": _PUBLIC, "requestBody": _REFRESH,
                   "responses": {"204": {"description": "signed out"}, **_errors(400, 421, 422)}},
    },
    f"{PREFIX}/auth/sessions/refresh": {"post": {
        "summary": "Rotate a refresh token; reusing a rotated one revokes its family", "security": _PUBLIC,
        "requestBody": _REFRESH,
        "responses": {"200": _ok("tokens", TOKENS), **_errors(400, 401, 421, 422, 429)}}},
    f"{PREFIX}/auth/config": {"get": {
        "summary": "Where verification codes go: `outbox` (dev mode: the server log and data-dir/outbox/) or `smtp`",
        "security": _PUBLIC,
        "responses": {"200": _ok("sign-up settings", _obj(["mail"], mail={"enum": ["outbox", "smtp"]})),
                      **_errors(421)}}},
    f"{PREFIX}/auth/dev-code": {"get": {
        "summary": "Only with --dev and no [smtp], to a direct loopback peer without forwarding headers: "
                   "the newest code in the outbox",
        "security": _PUBLIC,
        "parameters": [{"name": "email", "in": "query", "required": True, "schema": _EMAIL}],
        "responses": {"200": _ok("the code", _obj(["email", "code"], email=_STR, code=_STR)),
                      **_errors(403, 404, 421, 422)}}},
    f"{PREFIX}/auth/users": {"get": {
        "summary": "Look up a user by email (yourself, or anyone for admins)",
        "parameters": [{"name": "email", "in": "query", "required": True, "schema": _EMAIL}],
        "responses": {"200": _ok("user", _obj(["id", "email", "created_at"], id=_STR, email=_STR,
                                             created_at={"type": "string", "format": "date-time"},
                                             email_confirmed_at={"type": ["string", "null"], "format": "date-time"})),
                      **_errors(401, 403, 404, 422)}}},
    f"{PREFIX}/users/me": {
        "get": {"summary": "Your profile (404 for an identity without a local account)",
                "responses": {"200": _ok("profile", PROFILE), **_errors(401, 404)}},
        "patch": {"summary": "Update your profile",
                  "requestBody": _body({"type": "object", "properties": {
                      "username": {"type": "string", "pattern": "^[A-Za-z0-9_]{3,30}$"},
                      "avatar_url": {"type": ["string", "null"], "format": "uri"},
                      "bio": {"type": ["string", "null"], "maxLength": 200}}}),
                  "responses": {"200": _ok("profile", PROFILE), **_errors(400, 401, 404, 409, 422)}},
    },
    f"{PREFIX}/users/{{username}}": {"get": {
        "summary": "A user's public profile",
        "parameters": [{"name": "username", "in": "path", "required": True,
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_]{3,30}$"}}],
        "responses": {"200": _ok("profile", PROFILE), **_errors(401, 404, 422)}}},
    "/.well-known/jwks.json": {"get": {"summary": "The public keys of the access tokens", "security": _PUBLIC,
                                       "responses": {"200": _ok("JWKS", {"type": "object"})}}},
    f"{PREFIX}/.well-known/jwks.json": {"get": {"summary": "The public keys of the access tokens (alias)",
                                                "security": _PUBLIC,
                                                "responses": {"200": _ok("JWKS", {"type": "object"})}}},
}
