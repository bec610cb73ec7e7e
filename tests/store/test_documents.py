"""Documents in the store: chunking, full-text search scoped per user (SQLite FTS5 and BM25, PostgreSQL
tsvector and ts_rank: the same ranking tests for both), safe queries."""
import pytest

from agents import extraction, knowledge
from agents.tools import ToolEnv, ToolError
from store import documents as documents_sql


async def add(open_store, doc_id, user, kid, text, filename=None):
    doc = {"id": doc_id, "user_id": user, "knowledge_id": kid, "filename": filename or f"{doc_id}.txt",
           "media_type": "text/plain", "size": len(text)}
    return await open_store.write(lambda tx: documents_sql.insert(tx, doc, extraction.chunk_text(text)))


def test_chunks_follow_paragraphs_and_sentences():
    paras = [f"Paragraph {i}. " + "word " * 60 for i in range(6)]
    chunks = extraction.chunk_text("\n\n".join(paras))
    assert all(len(c) <= extraction.CHUNK_CHARS for c in chunks)
    assert len(chunks) >= 2
    assert all(c.startswith("Paragraph") for c in chunks)  # split between paragraphs
    long = " ".join(f"Sentence number {i} says something." for i in range(100))
    pieces = extraction.chunk_text(long)
    assert all(len(c) <= extraction.CHUNK_CHARS for c in pieces)
    assert all(c.startswith("Sentence") and c.endswith(".") for c in pieces)  # sentence boundaries
    assert "".join(pieces).replace(" ", "") == long.replace(" ", "")
    assert extraction.chunk_text("   \n\n  ") == []
    assert extraction.chunk_text("x" * 2000) == ["x" * 800, "x" * 800, "x" * 400]


def test_match_expression_quotes_every_term():
    assert documents_sql.match_expression('refund "policy" NEAR(a b) col:x*') == \
        '"refund" OR "policy" OR "near" OR "a" OR "b" OR "col" OR "x"'
    assert documents_sql.match_expression('"" ** () -- ^') is None
    assert documents_sql.match_expression("") is None
    assert documents_sql.match_expression("Ünïcödé café") == '"ünïcödé" OR "café"'


async def test_search_ranks_and_scopes(open_store):
    await add(open_store, "d1", "alice", "kb1", "Our refund policy: a refund is given within 30 days. Refund requests go to billing.")
    await add(open_store, "d2", "alice", "kb1", "Shipping takes five days. Ask support about a refund if the parcel is lost.")
    await add(open_store, "d3", "alice", "kb2", "Unrelated notes about gardening and tomatoes.")
    await add(open_store, "d4", "bob", "kb1", "Bob's refund policy refund refund refund.")
    match = documents_sql.match_expression("refund policy")
    hits = await open_store.read(lambda c: documents_sql.search(c, "alice", match, None, 10))
    assert [h["document_id"] for h in hits] == ["d1", "d2"]
    assert hits[0]["score"] > hits[1]["score"] > 0
    assert "**refund**" in hits[0]["snippet"].lower()
    scoped = await open_store.read(lambda c: documents_sql.search(c, "alice", match, "kb2", 10))
    assert scoped == []
    bobs = await open_store.read(lambda c: documents_sql.search(c, "bob", match, None, 10))
    assert [h["document_id"] for h in bobs] == ["d4"]
    limited = await open_store.read(lambda c: documents_sql.search(c, "alice", match, None, 1))
    assert [h["document_id"] for h in limited] == ["d1"]


async def test_one_result_per_document_and_delete(open_store):
    text = "\n\n".join(f"Section {i}: the warranty covers parts. " + "filler " * 100 for i in range(5))
    row = await add(open_store, "w", "alice", "kb", text)
    assert row["chunks"] >= 3
    match = documents_sql.match_expression("warranty")
    hits = await open_store.read(lambda c: documents_sql.search(c, "alice", match, None, 10))
    assert [h["document_id"] for h in hits] == ["w"]
    await open_store.write(lambda tx: documents_sql.delete(tx, "w"))
    assert await open_store.read(lambda c: documents_sql.search(c, "alice", match, None, 10)) == []
    assert await open_store.read(lambda c: documents_sql.list_for(c, "alice")) == []


async def test_tool_validates_and_scopes(open_store, tmp_path):
    await add(open_store, "a1", "alice", "kb", "The refund window is thirty days.", filename="policy.txt")
    tool = knowledge.make_tool(open_store, tmp_path)
    assert tool.name == "knowledge_search" and tool.input_schema["required"] == ["query"]
    out = await tool.run({"query": "refund"}, ToolEnv("alice", "t", "th"))
    assert [(r["document_id"], r["filename"], r["knowledge_id"]) for r in out["results"]] == [("a1", "policy.txt", "kb")]
    assert set(out["results"][0]) == {"document_id", "filename", "knowledge_id", "score", "snippet"}
    assert (await tool.run({"query": "refund"}, ToolEnv("bob", "t", "th"))) == {"results": []}
    assert (await tool.run({"query": "refund", "knowledge_id": "other"}, ToolEnv("alice", "t", "th"))) == {"results": []}
    for bad in ({}, {"query": ""}, {"query": '"" ()'}, {"query": "x", "limit": 0}, {"query": "x", "limit": "3"},
                {"query": "x", "knowledge_id": 5}):
        with pytest.raises(ToolError):
            await tool.run(bad, ToolEnv("alice", "t", "th"))
    assert (await tool.run({"query": "refund", "limit": 500}, ToolEnv("alice", "t", "th")))["results"]


def test_detect_type():
    d = knowledge.detect_type
    assert d("a.txt", b"hello") == "text/plain"
    assert d("a.MD", b"# hi") == "text/markdown"
    assert d("a.html", b"<p>x</p>") == "text/html"
    assert d("a.pdf", b"%PDF-1.4 ...") == "application/pdf"
    assert d("noext", b"%PDF-1.4 ...") == "application/pdf"
    assert d("noext", b"plain", "text/plain; charset=utf-8") == "text/plain"
    for args in (("a.exe", b"MZ\x90\x00"), ("a.zip", b"PK\x03\x04"), ("a.txt", b"PK\x03\x04rest"),
                 ("a.pdf", b"not a pdf"), ("a.txt", b"%PDF-1.4"), ("noext", b"hello"),
                 ("a.txt", b"nul\x00byte"), ("noext", b"x", "application/octet-stream"), ("a.exe", b"text")):
        with pytest.raises(knowledge.DocumentError) as err:
            d(*args)
        assert isinstance(err.value, extraction.UnsupportedDocument)


def test_html_text_drops_scripts_and_styles():
    html = ("<html><head><title>Guide</title><style>.x{color:red}</style><script>var secret = 'zzz';</script></head>"
            "<body><h1>Returns</h1><p>Send it back &amp; get money.</p><script>alert('qqq')</script>"
            "<noscript>enable js</noscript><p>Done</p></body></html>")
    text = extraction.html_to_text(html)
    assert "Guide" in text and "Returns" in text and "Send it back & get money." in text and "Done" in text
    assert "secret" not in text and "qqq" not in text and "color" not in text and "enable js" not in text


def test_invalid_utf8_is_422():
    with pytest.raises(knowledge.DocumentError) as err:
        extraction.extract_text("text/plain", b"\xff\xfe\xfa bad")
    assert isinstance(err.value, extraction.UnreadableDocument)
