"""Documents as knowledge: type detection, text extraction, chunking, and the `knowledge_search` tool.

No HTTP here: handlers/documents.py maps `DocumentError` to its status.
"""
from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from agents.tools import Tool, ToolEnv, ToolError
from store import documents as documents_sql
from store.db import Database

log = logging.getLogger("parley.knowledge")

CHUNK_CHARS = 800
DEFAULT_LIMIT = 5
MAX_LIMIT = 20
MAX_QUERY = 1000
MAX_PDF_PAGES = 2000

TEXT_TYPES = {".txt": "text/plain", ".text": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown",
              ".html": "text/html", ".htm": "text/html"}
PDF = "application/pdf"
SUPPORTED = (*sorted(set(TEXT_TYPES.values())), PDF)
# Leading bytes of formats that are never text, whatever the file is called.
_BINARY_MAGIC = (b"%PDF-", b"PK\x03\x04", b"PK\x05\x06", b"MZ\x90\x00", b"\x7fELF", b"\x1f\x8b", b"\x89PNG", b"\xff\xd8\xff",
                 b"GIF8", b"Rar!", b"7z\xbc\xaf", b"\xca\xfe\xba\xbe", b"\xcf\xfa\xed\xfe", b"\xd0\xcf\x11\xe0")


class DocumentError(Exception):
    """The upload cannot be taken: `status` 415 (type) or 422 (content)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def detect_type(filename: str, data: bytes, declared: str | None = None) -> str:
    """The media type of an upload, from its extension and its content; the client's type is only a hint.

    A PDF must start with `%PDF-`; a text type must not look like a known
    binary format nor hold NUL bytes.  Anything else is 415.
    """
    suffix = Path(filename).suffix.lower()
    head = data[:1024].lstrip(b"\xef\xbb\xbf")
    if data.startswith(b"%PDF-"):
        if suffix in ("", ".pdf"):
            return PDF
        raise DocumentError(415, f"the content is a PDF, which {suffix!r} files cannot be", "UNSUPPORTED_MEDIA_TYPE")
    if suffix == ".pdf":
        raise DocumentError(415, "the file is not a PDF (no %PDF- header)", "UNSUPPORTED_MEDIA_TYPE")
    media_type = TEXT_TYPES.get(suffix)
    if media_type is None and suffix == "" and declared:
        hint = declared.split(";", 1)[0].strip().lower()
        media_type = hint if hint in TEXT_TYPES.values() else None
    if media_type is None:
        what = f"{suffix!r}" if suffix else "without a known extension"
        raise DocumentError(415, f"unsupported file type {what}; supported: {', '.join(SUPPORTED)}",
                            "UNSUPPORTED_MEDIA_TYPE")
    if head.startswith(_BINARY_MAGIC) or b"\x00" in data:
        raise DocumentError(415, f"the content is binary, not {media_type}", "UNSUPPORTED_MEDIA_TYPE")
    return media_type


class _HTMLText(HTMLParser):
    """Visible text of an HTML page: no scripts, styles or templates; blocks become paragraphs."""

    SKIP = {"script", "style", "noscript", "template", "svg", "iframe", "object", "head"}
    KEEP_IN_HEAD = {"title"}
    BLOCKS = {"p", "div", "section", "article", "header", "footer", "main", "aside", "nav", "li", "ul", "ol",
              "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "br", "hr", "title",
              "dd", "dt", "dl", "figure", "figcaption", "form", "td", "th"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip: list[str] = []
        self._title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP and tag != "head":
            self._skip.append(tag)
        elif tag == "title":
            self._title = True
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if self._skip and tag == self._skip[-1]:
            self._skip.pop()
        elif tag in self._skip:
            while self._skip and self._skip.pop() != tag:
                pass
        if tag == "title":
            self._title = False
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def pdf_to_text(data: bytes) -> str:
    """The text of a PDF's pages (blocking: run it in a thread)."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if len(reader.pages) > MAX_PDF_PAGES:
            raise DocumentError(422, f"the PDF has more than {MAX_PDF_PAGES} pages", "VALIDATION_ERROR")
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except DocumentError:
        raise
    except (PyPdfError, Exception) as exc:  # untrusted input: any parser failure is the file's fault
        log.info("unreadable PDF: %s", exc)
        raise DocumentError(422, "the PDF could not be read", "VALIDATION_ERROR") from None


def extract_text(media_type: str, data: bytes) -> str:
    """The plain text of a document of a detected type (blocking for PDFs)."""
    if media_type == PDF:
        return pdf_to_text(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DocumentError(422, f"the {media_type} document is not valid UTF-8", "VALIDATION_ERROR") from None
    return html_to_text(text) if media_type == "text/html" else text


_SENTENCE = re.compile(r"(?<=[.!?…])\s+")
_BLANK = re.compile(r"\n\s*\n")
_SPACES = re.compile(r"[ \t\r\f\v]+")


def _pieces(paragraph: str, size: int) -> list[str]:
    """A paragraph longer than `size` split on sentence ends, then on spaces, then hard."""
    out: list[str] = []
    for sentence in _SENTENCE.split(paragraph):
        while len(sentence) > size:
            cut = sentence.rfind(" ", 0, size)
            cut = cut if cut > size // 2 else size
            out.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            out.append(sentence)
    return out


def chunk_text(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Split text into chunks of about `size` characters on paragraph, then sentence boundaries."""
    paragraphs = []
    for para in _BLANK.split(text.replace("\r\n", "\n")):
        para = "\n".join(_SPACES.sub(" ", line).strip() for line in para.split("\n")).strip()
        para = re.sub(r"\n+", "\n", para)
        if para:
            paragraphs.append(para)
    chunks: list[str] = []
    current = ""
    for para in paragraphs:
        for piece in [para] if len(para) <= size else _pieces(para, size):
            sep = "\n\n" if piece is para else " "
            if current and len(current) + len(sep) + len(piece) > size:
                chunks.append(current)
                current = piece
            else:
                current = f"{current}{sep}{piece}" if current else piece
    if current:
        chunks.append(current)
    return chunks


@dataclass(frozen=True)
class _Search:
    db: Database
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


def make_tool(db: Database, data_dir: Path) -> Tool:
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
