"""Documents as knowledge: type detection, text extraction off the event loop (agents/extraction.py
in a sandbox worker), the per-user limits of uploads, and the `knowledge_search` tool.

No HTTP here: the errors are DocumentError's kinds (agents/extraction.py), and
handlers/jobs/documents.py answers each with its status.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.extraction import PDF, DocumentError, DocumentTooComplex, UnsupportedDocument
from agents.sandbox import JobError, Sandbox, SandboxFailed, SandboxTimeout
from agents.tools import Tool, ToolEnv, ToolError
from store import Store
from store import documents as documents_sql

log = logging.getLogger("parley.knowledge")

DEFAULT_LIMIT = 5
MAX_LIMIT = 20
MAX_QUERY = 1000

TEXT_TYPES = {".txt": "text/plain", ".text": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown",
              ".html": "text/html", ".htm": "text/html"}
SUPPORTED = (*sorted(set(TEXT_TYPES.values())), PDF)
# Leading bytes of formats that are never text, whatever the file is called.
_BINARY_MAGIC = (b"%PDF-", b"PK\x03\x04", b"PK\x05\x06", b"MZ\x90\x00", b"\x7fELF", b"\x1f\x8b", b"\x89PNG", b"\xff\xd8\xff",
                 b"GIF8", b"Rar!", b"7z\xbc\xaf", b"\xca\xfe\xba\xbe", b"\xcf\xfa\xed\xfe", b"\xd0\xcf\x11\xe0")


def detect_type(filename: str, data: bytes, declared: str | None = None) -> str:
    """The media type of an upload, from its extension and its content; the client's type is only a hint.

    A PDF must start with `%PDF-`; a text type must not look like a known
    binary format nor hold NUL bytes.  Anything else is an UnsupportedDocument.
    """
    suffix = Path(filename).suffix.lower()
    head = data[:1024].lstrip(b"\xef\xbb\xbf")
    if data.startswith(b"%PDF-"):
        if suffix in ("", ".pdf"):
            return PDF
        raise UnsupportedDocument(f"the content is a PDF, which {suffix!r} files cannot be")
    if suffix == ".pdf":
        raise UnsupportedDocument("the file is not a PDF (no %PDF- header)")
    media_type = TEXT_TYPES.get(suffix)
    if media_type is None and suffix == "" and declared:
        hint = declared.split(";", 1)[0].strip().lower()
        media_type = hint if hint in TEXT_TYPES.values() else None
    if media_type is None:
        what = f"{suffix!r}" if suffix else "without a known extension"
        raise UnsupportedDocument(f"unsupported file type {what}; supported: {', '.join(SUPPORTED)}")
    if head.startswith(_BINARY_MAGIC) or b"\x00" in data:
        raise UnsupportedDocument(f"the content is binary, not {media_type}")
    return media_type


EXTRACT_TIMEOUT_S = 10.0
QUOTA_MB = 100
UPLOADS_PER_MINUTE = 30
# Text extraction of uploads (agents/extraction.py), in killable workers with capped memory.
EXTRACTION = Sandbox("agents.extraction:extract_chunks", workers=2, memory_mb=768)


async def extract_chunks(media_type: str, data: bytes, timeout_s: float = EXTRACT_TIMEOUT_S) -> list[str]:
    """The chunks of a document's text, extracted off the event loop within `timeout_s` seconds.

    A DocumentError for content that is unreadable (UnreadableDocument), holds too much
    text (DocumentTooLong) or takes too much time or memory (DocumentTooComplex).
    """
    try:
        chunks = await EXTRACTION.call(timeout_s, data, media_type=media_type)
    except JobError as exc:
        raise DocumentError.from_code(exc.details.get("code"), exc.message) from None
    except SandboxTimeout:
        raise DocumentTooComplex(f"reading the document took longer than {timeout_s:g} s; it was stopped") from None
    except SandboxFailed as exc:
        log.info("document extraction failed: %s", exc)
        raise DocumentTooComplex(f"the document could not be read: {exc}") from None
    return [str(c) for c in chunks]


@dataclass(frozen=True)
class DocumentLimits:
    """What one user may put into knowledge bases: the config's `[documents]` table."""

    quota_bytes: int = QUOTA_MB * 1024 * 1024
    uploads_per_minute: int = UPLOADS_PER_MINUTE
    extract_timeout_s: float = EXTRACT_TIMEOUT_S

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> DocumentLimits:
        """`[documents] quota_mb = 100, uploads_per_minute = 30, extract_timeout_s = 10`, each optional
        (their types and bounds checked by config.py's schema)."""
        table = extra.get("documents", {})
        quota = table.get("quota_mb", QUOTA_MB)
        return cls(quota_bytes=int(quota * 1024 * 1024), uploads_per_minute=table.get("uploads_per_minute", UPLOADS_PER_MINUTE),
                   extract_timeout_s=float(table.get("extract_timeout_s", EXTRACT_TIMEOUT_S)))


@dataclass(frozen=True)
class _Search:
    db: Store
    data_dir: Path

    async def __call__(self, args: dict[str, Any], env: ToolEnv) -> dict[str, Any]:
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolError("query must be a non-empty string")
        if len(query) > MAX_QUERY:
            raise ToolError(f"query longer than {MAX_QUERY} characters")
        knowledge_id = args.get("knowledge_id")
        if knowledge_id is not None and (not isinstance(knowledge_id, str) or not 1 <= len(knowledge_id) <= 128):
            raise ToolError("knowledge_id must be a string of 1 to 128 characters")
        limit = args.get("limit", DEFAULT_LIMIT)
        if limit is None:
            limit = DEFAULT_LIMIT
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ToolError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
        limit = min(limit, MAX_LIMIT)
        match = documents_sql.match_expression(query)
        if match is None:
            raise ToolError("the query holds no searchable words")
        results = await self.db.read(lambda c: documents_sql.search(c, env.user_id, match, knowledge_id, limit))
        return {"results": results}


def make_tool(db: Store, data_dir: Path) -> Tool:
    """The `knowledge_search` tool over the documents of the user a run belongs to."""
    return Tool(
        "knowledge_search",
        "Full-text search (BM25) over the documents the user uploaded; optionally within one knowledge base.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "words to look for"},
                "knowledge_id": {"type": "string", "description": "search only this knowledge base"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
        _Search(db, data_dir),
    )
