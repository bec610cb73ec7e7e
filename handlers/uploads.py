"""Multipart uploads limited while they stream in (SPEC section 13), shared by every upload route.

`MultipartHandler` keeps APIHandler's streamed body: at most `max_body`
bytes are buffered; past that the rest is discarded as it arrives and the
answer is 413, with or without Content-Length.  `multipart_body()` parses
what was kept.  Files are stored under server-made names (runs/files.py);
the client's file name is only ever shown (`clean_filename`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from tornado import httputil, web

from handlers.base import APIHandler
from handlers.errors import ApiError

MAX_UPLOAD = 5 * 1024 * 1024  # the whole request body; 5 MiB + 1 byte -> 413
MAX_FILENAME = 255


def clean_filename(name: str | None, default: str = "document") -> str:
    """The client's file name for display only: its last path component, printable, bounded."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    if base in (".", ".."):
        base = ""
    if len(base) > MAX_FILENAME:
        stem, ext = os.path.splitext(base)
        base = stem[: MAX_FILENAME - len(ext[:16])] + ext[:16]
    return base or default


@dataclass
class Form:
    """A parsed multipart/form-data body."""

    arguments: dict[str, list[bytes]]
    files: dict[str, list[httputil.HTTPFile]]

    def text(self, name: str, code: str | None = None) -> str | None:
        """The text field `name` (UTF-8), or None when absent; 422 when it is not UTF-8."""
        raw = self.arguments.get(name, [None])[0]
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(422, f"the field `{name}` is not UTF-8 text", code, field=name) from None

    def one_file(self, *names: str, code: str | None = None) -> httputil.HTTPFile:
        """The one file sent under the first of `names` present; 422 unless there is exactly one."""
        uploads = next((self.files[n] for n in names if self.files.get(n)), [])
        if len(uploads) != 1:
            raise ApiError(422, f"exactly one file is required in the field `{names[0]}`", code, field=names[0])
        return uploads[0]


class MultipartHandler(APIHandler):
    """An API route whose body is multipart/form-data of at most `max_body` bytes."""

    max_body = MAX_UPLOAD

    def multipart_body(self, fields: str, malformed_status: int = 400, code: str | None = None) -> Form:
        """The streamed body as a form: 413 when it outgrew `max_body`; 422 when it is not
        multipart/form-data (`fields` names what it should hold); `malformed_status` when it
        does not parse.  The buffer is handed over, not copied twice."""
        if self._finished:
            raise web.Finish()
        if self._too_large:
            raise self._payload_too_large()
        body, self._body = bytes(self._body), bytearray()
        ctype = self.request.headers.get("Content-Type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise ApiError(422, f"the body must be multipart/form-data with {fields}", code)
        form = Form({}, {})
        try:
            httputil.parse_body_arguments(ctype, body, form.arguments, form.files, self.request.headers)
        except httputil.HTTPInputError as exc:
            raise ApiError(malformed_status, f"invalid multipart body: {exc}",
                           "BAD_REQUEST" if malformed_status == 400 else code) from None
        return form
