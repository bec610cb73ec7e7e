"""agents/extraction.py, the job a sandbox worker runs for an upload: bounded text, bounded decompression."""
import time

import pytest

from agents import extraction, knowledge
from tests.handlers.jobs.test_document_limits import shared_stream_pdf


def test_pages_sharing_one_stream_count_their_text_together(monkeypatch):
    pdf = shared_stream_pdf(pages=8, repeat=50)  # each page: 50 lines, ~2 KB of text
    one_page = len(extraction.pdf_to_text(shared_stream_pdf(pages=1, repeat=50)))
    assert 1500 < one_page < 2500
    monkeypatch.setattr(extraction, "MAX_TEXT_BYTES", 4 * one_page)
    with pytest.raises(extraction.DocumentError) as err:
        extraction.pdf_to_text(pdf)
    assert (type(err.value), err.value.code) == (extraction.DocumentTooLong, "DOCUMENT_TOO_LONG")
    monkeypatch.setattr(extraction, "MAX_TEXT_BYTES", 9 * one_page)
    assert extraction.pdf_to_text(pdf).count("All work and no play") == 8 * 50


def test_a_stream_is_not_inflated_beyond_the_cap():
    content = b"BT /F1 12 Tf 72 720 Td (hi) Tj " + b" " * (extraction.MAX_DECODED_BYTES + 1024) + b"ET"
    pdf = shared_stream_pdf(pages=1, repeat=0, content=content)
    assert len(pdf) < 40_000
    start = time.perf_counter()
    with pytest.raises(extraction.DocumentError) as err:
        extraction.pdf_to_text(pdf)
    assert (type(err.value), err.value.code) == (extraction.DocumentTooComplex, "DOCUMENT_TOO_COMPLEX")
    assert time.perf_counter() - start < 2
    # just under the cap is read
    content = b"BT /F1 12 Tf 72 720 Td (hi) Tj " + b" " * (extraction.MAX_DECODED_BYTES // 2) + b"ET"
    assert extraction.pdf_to_text(shared_stream_pdf(pages=1, repeat=0, content=content)).strip() == "hi"


def test_text_beyond_2_mb_is_refused_not_cut():
    assert extraction.MAX_TEXT_BYTES == 2 * 1024 * 1024
    fits = b"x" * extraction.MAX_TEXT_BYTES
    assert extraction.extract_text("text/plain", fits) == fits.decode()
    for media_type in ("text/plain", "text/markdown", "text/html"):
        with pytest.raises(extraction.DocumentError) as err:
            extraction.extract_text(media_type, fits + b"y")
        assert err.value.code == "DOCUMENT_TOO_LONG"
    assert len("é".encode()) == 2  # bytes of UTF-8 count, not characters
    with pytest.raises(extraction.DocumentError):
        extraction.extract_text("text/plain", "é".encode() * (extraction.MAX_TEXT_BYTES // 2 + 1))


async def test_extraction_errors_cross_the_worker_as_document_errors():
    assert await knowledge.extract_chunks("text/plain", b"Hello there. General Kenobi.") == ["Hello there. General Kenobi."]
    with pytest.raises(knowledge.DocumentError) as err:
        await knowledge.extract_chunks("text/plain", b"\xff\xfe bad")
    assert (type(err.value), err.value.code) == (extraction.UnreadableDocument, "VALIDATION_ERROR")
    with pytest.raises(knowledge.DocumentError) as err:
        await knowledge.extract_chunks("application/pdf", b"%PDF-1.4\ngarbage")
    assert (type(err.value), err.value.code) == (extraction.UnreadableDocument, "VALIDATION_ERROR")
