"""A document's text, in chunks: HTML and PDF extraction and the chunker, bounded (SPEC 13).

This is what a sandbox worker runs (agents/sandbox.py, called by agents/knowledge.py), so
it imports nothing heavy: a hostile file costs at most the worker's time and memory
limits.  Bounds of its own: at most MAX_TEXT_BYTES of text per document (more is
refused, never silently cut), MAX_PDF_PAGES pages, and MAX_DECODED_BYTES out of any one
PDF stream (pypdf's decoders stop there).
"""
from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from typing import ClassVar

from agents.sandbox import JobError

CHUNK_CHARS = 800
MAX_TEXT_BYTES = 2 * 1024 * 1024
MAX_PDF_PAGES = 2000
MAX_DECODED_BYTES = 16 * 1024 * 1024
PDF = "application/pdf"


class DocumentError(JobError):
    """The document cannot be taken; `code` names why (the job surface shows it as the error's code).

    A JobError, so that it crosses the worker's process boundary: its `code` travels in the
    details, and `from_code` makes the same kind of error again on the other side.
    """

    code: ClassVar[str] = "VALIDATION_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message, code=self.code)

    @staticmethod
    def from_code(code: object, message: str) -> DocumentError:
        """The error of the kind `code` names (an unreadable document for a code it does not know)."""
        kind = next((k for k in _KINDS if k.code == code), UnreadableDocument)
        return kind(message)


class UnsupportedDocument(DocumentError):
    """Not a type a document can be: the extension and the content decide, never the client's word."""

    code = "UNSUPPORTED_MEDIA_TYPE"


class UnreadableDocument(DocumentError):
    """Content that cannot be read as its type says (not UTF-8, a broken PDF, too many pages)."""

    code = "VALIDATION_ERROR"


class DocumentTooLong(DocumentError):
    """More than MAX_TEXT_BYTES of text: refused, never silently cut."""

    code = "DOCUMENT_TOO_LONG"


class DocumentTooComplex(DocumentError):
    """Beyond a safety limit of the reader: too slow, too much memory, a stream that inflates too far."""

    code = "DOCUMENT_TOO_COMPLEX"


_KINDS = (UnsupportedDocument, UnreadableDocument, DocumentTooLong, DocumentTooComplex)


class _HTMLText(HTMLParser):
    """Visible text of an HTML page: no scripts, styles or templates; blocks become paragraphs."""

    SKIP = {"script", "style", "noscript", "template", "svg", "iframe", "object", "head"}
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


def _too_long() -> DocumentTooLong:
    return DocumentTooLong(f"the document holds more than {MAX_TEXT_BYTES // (1024 * 1024)} MB of text; "
                           "split it into smaller documents")


def pdf_to_text(data: bytes) -> str:
    """The text of a PDF's pages; a DocumentError for an unreadable PDF or one beyond the bounds."""
    from pypdf import PdfReader, apply_configuration
    from pypdf.errors import LimitReachedError

    cap = MAX_DECODED_BYTES
    pages: list[str] = []
    size = 0
    try:
        with apply_configuration(
            zlib_maximum_output_length=cap, lzw_maximum_output_length=cap, run_length_maximum_output_length=cap,
            brotli_maximum_output_length=cap, array_based_stream_maximum_output_length=cap,
            maximum_declared_stream_length=cap, stream_decoding_work_maximum_length=cap,
        ):
            reader = PdfReader(io.BytesIO(data))
            if len(reader.pages) > MAX_PDF_PAGES:
                raise UnreadableDocument(f"the PDF has more than {MAX_PDF_PAGES} pages")
            for page in reader.pages:  # pages may share one content stream: count what each yields
                # A lone surrogate (a broken ToUnicode map) becomes "?": the text must be valid UTF-8.
                text = (page.extract_text() or "").encode("utf-8", "replace").decode("utf-8")
                size += len(text.encode("utf-8")) + 2
                if size > MAX_TEXT_BYTES:
                    raise _too_long()
                pages.append(text)
    except DocumentError:
        raise
    except LimitReachedError as exc:
        raise DocumentTooComplex(f"the PDF is beyond a safety limit: {exc}") from None
    except MemoryError:
        raise
    except Exception:  # untrusted input: any other parser failure is the file's fault
        raise UnreadableDocument("the PDF could not be read") from None
    return "\n\n".join(pages)


def extract_text(media_type: str, data: bytes) -> str:
    """The plain text of a document of a detected type, at most MAX_TEXT_BYTES of it (else DocumentTooLong)."""
    if media_type == PDF:
        return pdf_to_text(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnreadableDocument(f"the {media_type} document is not valid UTF-8") from None
    if media_type == "text/html":
        text = html_to_text(text)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise _too_long()
    return text


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


def extract_chunks(media_type: str, data: bytes) -> list[str]:
    """The job a sandbox worker runs for an upload: its text (bounded), in chunks."""
    return chunk_text(extract_text(media_type, data))
