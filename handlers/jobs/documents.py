"""Documents on the job surface (SPEC sections 11, 13): upload, list, delete; they feed `knowledge_search`.

Uploads stream in under `max_body` (5 MiB for the whole multipart body,
enforced by APIHandler.data_received while the bytes arrive, with or
without Content-Length: the rest is discarded, never buffered, and the
answer is 413).  The type is decided from the file's extension and its
content, never from the client's Content-Type alone.  The text is
extracted in a sandbox worker with a time limit (agents/knowledge.py).
The original file is kept as data_dir/documents/<server-made uuid> (runs/files.py).

Per user (the config's `[documents]` table, agents/knowledge.DocumentLimits):
uploads are rate-limited (30 a minute: 429 RATE_LIMITED with Retry-After), and
the bytes of their documents count against a quota (100 MB: 413
QUOTA_EXCEEDED); deleting a document frees its share.
"""
from __future__ import annotations

from typing import Any, cast

from agents import knowledge
from agents.extraction import DocumentError, UnsupportedDocument
from auth.ratelimit import IN_MEMORY, RateLimit, Windows, retry_after
from handlers.errors import ApiError
from handlers.jobs.jobs import JobsHandler
from handlers.times import iso_ms
from handlers.uploads import MAX_UPLOAD, MultipartHandler, clean_filename
from store.documents import QuotaExceeded

MAX_KNOWLEDGE_ID = 128


def check_knowledge_id(value: Any, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_KNOWLEDGE_ID or not value.isprintable():
        raise ApiError(422, f"knowledge_id must be a string of 1 to {MAX_KNOWLEDGE_ID} printable characters",
                       "VALIDATION_ERROR", field="knowledge_id")
    return value


def public(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["id"], "knowledge_id": doc["knowledge_id"], "filename": doc["filename"],
        "media_type": doc["media_type"], "size": doc["size"], "chunks": doc["chunks"],
        "created_at": iso_ms(doc["created_at"]),
    }


def document_settings(extra: dict[str, Any], windows: Windows = IN_MEMORY) -> dict[str, Any]:
    """The application settings these routes read, from the config's `[documents]` table
    (ValueError naming the key at fault)."""
    limits = knowledge.DocumentLimits.from_extra(extra)
    return {"document_limits": limits, "document_uploads": windows.window("documents.uploads", limits.uploads_per_minute)}


def document_refusal(exc: DocumentError) -> ApiError:
    """A refused document as this surface answers it: 415 for a type it cannot be, 422 for its content."""
    return ApiError(415 if isinstance(exc, UnsupportedDocument) else 422, exc.message, exc.code)


def _quota_exceeded(used: int, size: int, quota: int) -> ApiError:
    mb = 1024 * 1024
    return ApiError(413, f"the documents of a user may take {quota / mb:g} MB; {used / mb:.1f} MB are used and this "
                         f"file has {size / mb:.1f} MB: delete documents first", "QUOTA_EXCEEDED",
                    quota_bytes=quota, used_bytes=used, size=size)


class JobsDocumentsHandler(JobsHandler):
    @property
    def limits(self) -> knowledge.DocumentLimits:
        return cast(knowledge.DocumentLimits, self._document_settings["document_limits"])

    @property
    def _document_settings(self) -> dict[str, Any]:
        settings = self.application.settings
        if "document_limits" not in settings:  # an application made without document_settings(): the defaults
            settings.update(document_settings({}))
        return settings


class JobsDocumentUploadHandler(JobsDocumentsHandler, MultipartHandler):
    max_body = MAX_UPLOAD

    async def prepare(self) -> None:
        await super().prepare()
        if self.identity is not None and self.request.method == "POST":
            window = cast(RateLimit, self._document_settings["document_uploads"])
            wait = await window.hit(self.user_id)
            if wait:
                raise ApiError(429, f"rate limit: {window.limit} document uploads a minute", "RATE_LIMITED",
                               retry_after=retry_after(wait))

    async def post(self) -> None:
        """multipart/form-data {file, knowledge_id} -> 201 {id, knowledge_id, filename, media_type, size, chunks, created_at}."""
        form = self.multipart_body("the fields file and knowledge_id", code="VALIDATION_ERROR")
        try:
            kid_value = form.text("knowledge_id")
        except ApiError:
            kid_value = ""
        if kid_value is None:
            kid_value = self.get_query_argument("knowledge_id", None)
        knowledge_id = check_knowledge_id(kid_value)
        assert knowledge_id is not None
        upload = form.one_file("file", code="VALIDATION_ERROR")
        data = upload.body
        filename = clean_filename(upload.filename)
        if len(data) > MAX_UPLOAD:  # cannot happen under max_body; kept for a larger max_body
            raise self._payload_too_large()
        quota, user_id = self.limits.quota_bytes, self.user_id
        used = await self.files.document_usage(user_id)
        if used + len(data) > quota:  # before spending a worker on it; the insert checks again
            raise _quota_exceeded(used, len(data), quota)
        try:
            media_type = knowledge.detect_type(filename, data, upload.content_type)
            chunks = await knowledge.extract_chunks(media_type, data, self.limits.extract_timeout_s)
        except DocumentError as exc:
            raise document_refusal(exc) from None
        if not chunks:
            raise ApiError(422, "the document holds no text", "VALIDATION_ERROR")
        try:
            row = await self.files.save_document(user_id, knowledge_id, filename, media_type, data, chunks, quota)
        except QuotaExceeded as exc:
            raise _quota_exceeded(exc.used, exc.size, exc.quota) from None
        self.set_header("Location", f"/api/documents/{row['id']}")
        self.write_json(public(row), 201)


class JobsDocumentListHandler(JobsDocumentsHandler):
    async def get(self) -> None:
        """{documents: [...]} of the user, of one knowledge base with ?knowledge_id=."""
        knowledge_id = check_knowledge_id(self.get_query_argument("knowledge_id", None), required=False)
        docs = await self.files.documents_of(self.user_id, knowledge_id)
        self.write_json({"documents": [public(d) for d in docs]})


class JobsDocumentHandler(JobsDocumentsHandler):
    async def delete(self, document_id: str) -> None:
        """204: the document, its chunks and its file are gone, and its bytes no longer count against the quota."""
        doc = await self.files.document(document_id)
        if doc is None:
            raise ApiError(404, f"document {document_id} not found", "DOCUMENT_NOT_FOUND")
        if doc["user_id"] != self.user_id:
            raise ApiError(403, "this document belongs to another user", "FORBIDDEN")
        await self.files.delete_document(document_id)
        self.set_status(204)
        self.finish()


default_handlers = [
    (r"/api/documents/upload", JobsDocumentUploadHandler),
    (r"/api/documents", JobsDocumentListHandler),
    (r"/api/documents/([^/]{1,128})", JobsDocumentHandler),
]

# OpenAPI operations of these routes, merged into handlers/openapi.py's OPERATIONS.
_ERR = {"$ref": "#/components/schemas/Error"}
_JSON = "application/json"
_ERRORS = {400: "bad request", 401: "missing or invalid credentials", 403: "the document of another user",
           404: "no such document", 413: "body larger than 5 MiB, or the user's quota (QUOTA_EXCEEDED) exceeded",
           415: "unsupported document type",
           422: "invalid fields or content; more than 2 MB of text (DOCUMENT_TOO_LONG); too slow or large to read "
                "(DOCUMENT_TOO_COMPLEX)",
           429: "more than the uploads a minute allowed (RATE_LIMITED, Retry-After)"}
DOCUMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "knowledge_id", "filename", "media_type", "size", "chunks", "created_at"],
    "properties": {
        "id": {"type": "string"}, "knowledge_id": {"type": "string"}, "filename": {"type": "string"},
        "media_type": {"enum": list(knowledge.SUPPORTED)}, "size": {"type": "integer"},
        "chunks": {"type": "integer"}, "created_at": {"type": "string", "format": "date-time"},
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": _ERRORS[c], "content": {_JSON: {"schema": _ERR}}} for c in codes}


OPENAPI: dict[str, dict[str, dict[str, Any]]] = {
    "/api/documents/upload": {"post": {
        "summary": "Upload a document (txt, md, html, pdf; at most 5 MiB for the whole body) into a knowledge base",
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file", "knowledge_id"], "properties": {
                "file": {"type": "string", "format": "binary"},
                "knowledge_id": {"type": "string", "minLength": 1, "maxLength": MAX_KNOWLEDGE_ID}}}}}},
        "responses": {"201": {"description": "stored and indexed", "content": {_JSON: {"schema": DOCUMENT_SCHEMA}}},
                      **_errors(400, 401, 413, 415, 422, 429)}}},
    "/api/documents": {"get": {
        "summary": "The user's documents (of one knowledge base with ?knowledge_id=)",
        "parameters": [{"name": "knowledge_id", "in": "query", "schema": {"type": "string", "maxLength": MAX_KNOWLEDGE_ID}}],
        "responses": {"200": {"description": "documents", "content": {_JSON: {"schema": {
            "type": "object", "properties": {"documents": {"type": "array", "items": DOCUMENT_SCHEMA}}}}}},
                      **_errors(401, 422)}}},
    "/api/documents/{document_id}": {"delete": {
        "summary": "Delete a document: its text leaves the knowledge base and its bytes the user's quota",
        "parameters": [{"name": "document_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"204": {"description": "deleted"}, **_errors(401, 403, 404)}}},
}
