"""Attachments and speech to text on the Agent API (seed 002, SPEC sections 8 and 13).  Errors: `{detail}`.

    POST /api/v1/agent/attachments                 multipart `file` (+ `bucket`, `threadId`) -> 201
    GET  /api/v1/agent/attachments/signed-url      ?bucket=&path=&expires_in=  (the owner only)
    GET  /api/v1/agent/attachments/file            ?bucket=&path=&exp=&sig=    (the signed URL: no other credentials)
    POST /api/v1/agent/transcribe                  multipart `audio` (or `file`), a WAV recording

Uploads are limited while they stream in (handlers/uploads.py).  A file is taken
only when its extension and its content agree on an allowed type (agents/upload_types.py),
and is stored (runs/files.py) as data_dir/attachments/<bucket>/<path>, where `path` is
server-made: <the owner's folder>/<uuid>.<ext>.  The owner's folder is an HMAC of the user id
under a server secret (UrlSigner.owner_folder), so that a URL handed to someone else
does not show who uploaded the file.  Files are found through their row's path, so
those stored under an older folder name keep being served.
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

from tornado import iostream

from agents import transcribe as transcription
from agents import upload_types
from agents.context import AgentError
from auth.ratelimit import IN_MEMORY, RateLimit, Windows, retry_after
from auth.signed_urls import FILE_ROUTE, UrlSigner
from handlers.agent_api.runs import AgentApiHandler
from handlers.base import MAX_JSON_BODY
from handlers.errors import ApiError
from handlers.uploads import MAX_UPLOAD, MultipartHandler, clean_filename
from handlers.validation import check_id
from runs.files import BUCKET
from runs.manager import Forbidden
from store.attachments import Attachment

log = logging.getLogger("parley.attachments")

MAX_ATTACHMENT = MAX_UPLOAD  # the whole body: 5 MiB + 1 byte -> 413
MAX_AUDIO = 10 * 1024 * 1024
DEFAULT_BUCKET = "attachments"
MAX_PATH = 512
DEFAULT_TTL_S = 3600
MAX_TTL_S = 86400
TRANSCRIBE_PER_MINUTE = 20
SEND_CHUNK = 64 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII)


def transcribe_limit(windows: Windows = IN_MEMORY) -> RateLimit:
    """Per-user limit of POST /transcribe (SPEC section 8): 20 a minute."""
    return windows.window("attachments.transcribe", TRANSCRIBE_PER_MINUTE)


def check_bucket(value: str | None) -> str:
    if value is None or not BUCKET.fullmatch(value):
        raise ApiError(422, "bucket must be 1 to 64 letters, digits, '_' or '-'")
    return value


def upload_refusal(exc: upload_types.UploadRefused) -> ApiError:
    """A refused upload as this surface answers it: 415 for a type that is not allowed, 422 for content."""
    return ApiError(415 if isinstance(exc, upload_types.UnsupportedType) else 422, exc.message)


def _iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat().replace("+00:00", "Z")


def content_type(media_type: str) -> str:
    return f"{media_type}; charset=utf-8" if media_type in upload_types.TEXT_TYPES else media_type


def content_disposition(row: Attachment) -> str:
    """`inline` for a verified image, else `attachment`; the name as ASCII and as RFC 5987 UTF-8."""
    kind = "inline" if row.media_type in upload_types.IMAGE_TYPES else "attachment"
    fallback = "".join(ch if " " <= ch < "\x7f" and ch not in '"\\;%' else "_" for ch in row.name)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(row.name, safe='')}"


class RangeNotSatisfiable(Exception):
    pass


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single `bytes=` range of a file of `size` bytes; None to send all of it
    (no header, another unit, several ranges, or a header that does not parse).  RangeNotSatisfiable
    when the range lies outside the file."""
    m = _RANGE.fullmatch((header or "").strip())
    if m is None or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if first == "":  # the last N bytes
        if int(last) == 0:
            raise RangeNotSatisfiable
        return max(0, size - int(last)), size
    start, end = int(first), (int(last) + 1 if last else size)
    if last and end <= start:  # last before first: not a valid range, so it is ignored
        return None
    if start >= size:
        raise RangeNotSatisfiable
    return start, min(end, size)


class AgentApiAttachmentsHandler(AgentApiHandler, MultipartHandler):
    max_body = MAX_JSON_BODY  # the upload routes raise it

    @property
    def signer(self) -> UrlSigner:
        return cast(UrlSigner, self.settings["url_signer"])


class AgentApiUploadHandler(AgentApiAttachmentsHandler):
    max_body = MAX_ATTACHMENT

    async def post(self) -> None:
        """multipart/form-data {file, bucket?, threadId?} -> 201 {bucket, path, name, size, mediaType, url}."""
        form = self.multipart_body("a file in the field `file` (and optionally `bucket`)", malformed_status=422)
        raw_bucket = form.text("bucket")
        bucket = check_bucket(DEFAULT_BUCKET if raw_bucket is None else raw_bucket)
        thread_id = check_id(form.text("threadId"), "threadId", required=False)
        if thread_id is not None:
            try:
                await self.runs.check_thread(thread_id, self.user_id)
            except Forbidden:
                raise ApiError(403, "this thread belongs to another user") from None
        upload = form.one_file("file")
        data = upload.body
        name = clean_filename(upload.filename, "attachment")
        try:
            media_type = upload_types.detect(name, data, upload.content_type)
        except upload_types.UploadRefused as exc:
            raise upload_refusal(exc) from None
        del form, upload
        path = f"{self.signer.owner_folder(self.user_id)}/{uuid.uuid4()}.{upload_types.EXTENSION[media_type]}"
        await self.files.save_attachment(bucket, path, self.user_id, name, media_type, data, thread_id)
        url, _ = self.signer.url(bucket, path, DEFAULT_TTL_S)
        # seed 002's shape ({attachment: {bucket, path, mimeType, size, url}}) plus the display name
        self.write_json({"attachment": {"bucket": bucket, "path": path, "mimeType": media_type, "size": len(data),
                                        "url": url, "name": name}}, 201)


class AgentApiSignedUrlHandler(AgentApiAttachmentsHandler):
    async def get(self) -> None:
        """?bucket=&path=&expires_in= -> {bucket, path, url, expiresAt} for the attachment's owner."""
        bucket = check_bucket(self.get_query_argument("bucket", None))
        path = self.get_query_argument("path", None)
        if not path or len(path) > MAX_PATH:
            raise ApiError(422, f"path must be the path of an attachment (1 to {MAX_PATH} characters)")
        raw = self.get_query_argument("expires_in", None)
        try:
            ttl = DEFAULT_TTL_S if raw is None else int(raw)
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= MAX_TTL_S:
            raise ApiError(422, f"expires_in must be a whole number of seconds from 1 to {MAX_TTL_S}")
        row = await self.files.attachment_at(bucket, path)
        if row is None:
            raise ApiError(404, "no such attachment")
        if row.user_id != self.user_id:
            raise ApiError(403, "this attachment belongs to another user")
        url, exp = self.signer.url(bucket, path, ttl)
        self.write_json({"bucket": bucket, "path": path, "url": url, "expiresAt": _iso(exp)})


class AgentApiFileHandler(AgentApiAttachmentsHandler):
    """The signed URL: it is the capability, so no other credentials are asked for."""

    auth = "none"

    async def get(self) -> None:
        q = self.get_query_argument
        bucket, path, sig = q("bucket", ""), q("path", ""), q("sig", "")
        try:
            exp = int(q("exp", ""))
        except ValueError:
            exp = -1
        if not bucket or not path or not sig or exp < 0 or not self.signer.verify(bucket, path, exp, sig):
            raise ApiError(403, "this URL's signature is not valid")
        remaining = exp - int(time.time())
        if remaining <= 0:
            raise ApiError(403, "this URL has expired")
        row = await self.files.attachment_at(bucket, path)
        if row is None:
            raise ApiError(404, "no such attachment")
        try:
            data = await self.files.attachment_bytes(bucket, path)
        except FileNotFoundError:
            raise ApiError(404, "the attachment's file is gone") from None
        await self.send_file(row, data, remaining)

    async def send_file(self, row: Attachment, data: bytes, remaining_s: int) -> None:
        size = len(data)
        try:
            span = byte_range(self.request.headers.get("Range"), size)
        except RangeNotSatisfiable:
            self.set_header("Content-Range", f"bytes */{size}")
            self.write_json({"detail": f"the range lies outside the file ({size} bytes)"}, 416)
            return
        self.set_header("Content-Type", content_type(row.media_type))
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Disposition", content_disposition(row))
        self.set_header("Content-Security-Policy", "default-src 'none'; sandbox")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", f"private, max-age={remaining_s}")
        self.set_header("ETag", f'"{row.sha256}"')
        self.set_header("Accept-Ranges", "bytes")
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        if span is not None and self.request.headers.get("If-Range", f'"{row.sha256}"') != f'"{row.sha256}"':
            span = None  # the client's copy is another version: send the whole file
        start, end = span or (0, size)
        if span is not None:
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.set_header("Content-Length", end - start)
        view = memoryview(data)
        try:
            for at in range(start, end, SEND_CHUNK):
                self.write(bytes(view[at:min(at + SEND_CHUNK, end)]))
                await self.flush()
        except iostream.StreamClosedError:
            return
        self.finish()


class AgentApiTranscribeHandler(AgentApiAttachmentsHandler):
    max_body = MAX_AUDIO

    async def post(self) -> None:
        """multipart/form-data {audio | file: WAV} -> {transcript, language, duration}."""
        agents = self.runs.agents
        config = agents.transcription
        if config is None:
            raise ApiError(501, transcription.HOW_TO)
        window = cast(RateLimit, self.settings["transcribe_limit"])
        wait = await window.hit(self.user_id)
        if wait:
            raise ApiError(429, f"rate limit: {window.limit} transcriptions a minute", retry_after=retry_after(wait))
        form = self.multipart_body("a WAV file in the field `audio` (or `file`)", malformed_status=422)
        data = form.one_file("audio", "file").body  # `audio` is the seed's name for it; `file` is taken too
        del form
        if not upload_types.is_wav(data):
            raise ApiError(415, "only WAV audio (audio/wav: a RIFF/WAVE file) can be transcribed")
        try:
            info = upload_types.wav_info(data)
        except upload_types.UploadRefused as exc:
            raise upload_refusal(exc) from None
        try:
            result = await transcription.transcribe(agents.providers[config.llm], config, data)
        except AgentError as exc:
            log.warning("transcription failed: %s: %s", exc.reason, exc.message)
            raise ApiError(502, exc.message) from None
        # seed 002's shape; `und` (BCP 47: undetermined) when neither the backend nor the config names one
        language = result.language or config.language or "und"
        self.write_json({"transcript": result.text, "language": language, "duration": round(info.duration_s, 3)})


default_handlers = [
    (r"/api/v1/agent/attachments", AgentApiUploadHandler),
    (r"/api/v1/agent/attachments/signed-url", AgentApiSignedUrlHandler),
    (FILE_ROUTE, AgentApiFileHandler),
    (r"/api/v1/agent/transcribe", AgentApiTranscribeHandler),
]

_S = {"type": "string"}
_JSON = "application/json"
_DETAIL = {"type": "object", "required": ["detail"], "properties": {"detail": _S}}
_TEXT = {400: "bad request", 401: "missing or invalid credentials", 403: "another user's attachment or thread",
         404: "no such attachment", 413: "body too large", 415: "a type that is not allowed", 422: "invalid input",
         429: "more than 20 transcriptions a minute (Retry-After says when to try again)",
         501: "no transcription backend is configured", 502: "the transcription backend failed"}


def _errors(*codes: int, **text: str) -> dict[str, Any]:
    return {str(c): {"description": text.get(f"e{c}", _TEXT[c]), "content": {_JSON: {"schema": _DETAIL}}} for c in codes}


def _multipart(required: list[str], **props: Any) -> dict[str, Any]:
    return {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": required, "properties": props}}}}


_FILE = {"type": "string", "format": "binary"}
_BUCKET = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_QUERY = [{"name": "bucket", "in": "query", "required": True, "schema": _BUCKET},
          {"name": "path", "in": "query", "required": True, "schema": {"type": "string", "maxLength": MAX_PATH}}]

OPENAPI: dict[str, dict[str, dict[str, Any]]] = {
    "/api/v1/agent/attachments": {"post": {
        "summary": f"Upload an attachment (at most {MAX_ATTACHMENT} bytes for the whole body): "
                   f"{', '.join(sorted(upload_types.BY_EXTENSION))}; the extension and the content must agree",
        "requestBody": _multipart(["file"], file=_FILE, bucket={**_BUCKET, "default": DEFAULT_BUCKET},
                                  threadId={"type": "string", "maxLength": 128}),
        "responses": {"201": {"description": "stored", "content": {_JSON: {"schema": {
            "type": "object", "required": ["attachment"], "properties": {"attachment": {"type": "object", "properties": {
                "bucket": _S, "path": {"type": "string", "description": "server-made: <owner folder>/<uuid>.<ext>"},
                "mimeType": {"enum": list(upload_types.ALLOWED)}, "size": {"type": "integer"},
                "url": {"type": "string", "description": f"a signed URL valid {DEFAULT_TTL_S} s"},
                "name": {"type": "string", "description": "the client's file name, for display"}}}}}}}},
            **_errors(401, 403, 413, 415, 422, e422="a malformed body, or content that is not its claimed type")}}},
    "/api/v1/agent/attachments/signed-url": {"get": {
        "summary": "A signed URL reading one of the user's attachments until it expires; it needs no other credentials",
        "parameters": [*_QUERY, {"name": "expires_in", "in": "query",
                                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TTL_S, "default": DEFAULT_TTL_S}}],
        "responses": {"200": {"description": "signed URL", "content": {_JSON: {"schema": {"type": "object", "properties": {
            "bucket": _S, "path": _S, "url": _S, "expiresAt": {"type": "string", "format": "date-time"}}}}}},
            **_errors(401, 403, 404, 422)}}},
    FILE_ROUTE: {"get": {
        "summary": "The attachment behind a signed URL (the URL is the credential), with its verified type; "
                   "inline for images, else a download; one byte range allowed",
        "security": [],
        "parameters": [*_QUERY, {"name": "exp", "in": "query", "required": True, "schema": {"type": "integer"}},
                       {"name": "sig", "in": "query", "required": True, "schema": _S},
                       {"name": "Range", "in": "header", "schema": _S}],
        "responses": {"200": {"description": "the file"}, "206": {"description": "the requested byte range"},
                      "304": {"description": "not modified (If-None-Match)"},
                      **_errors(403, 404, e403="a tampered or expired signature"),
                      "416": {"description": "the range lies outside the file", "content": {_JSON: {"schema": _DETAIL}}}}}},
    "/api/v1/agent/transcribe": {"post": {
        "summary": f"Speech to text of a WAV recording (at most {MAX_AUDIO} bytes for the whole body, "
                   f"{TRANSCRIBE_PER_MINUTE} a minute per user) through the [transcribe] backend",
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "oneOf": [{"required": ["audio"]}, {"required": ["file"]}],
            "properties": {"audio": {**_FILE, "description": "a WAV file (the seed's name for the field)"},
                           "file": {**_FILE, "description": "a WAV file (the same, under the common name)"}}}}}},
        "responses": {"200": {"description": "transcript", "content": {_JSON: {"schema": {
            "type": "object", "required": ["transcript", "language", "duration"], "properties": {
                "transcript": _S, "duration": {"type": "number", "description": "seconds, from the WAV header"},
                "language": {"type": "string", "description": "the backend's, else [transcribe] language, else `und`"}}}}}},
            **_errors(401, 413, 415, 422, 429, 501, 502, e422="a malformed body or WAV file")}}},
}
