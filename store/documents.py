"""Uploaded documents, their chunks, and FTS5 search over them (scoped to one user)."""
from __future__ import annotations

import re
from typing import Any

import aiosqlite

from store.db import WriteTx, dialect, now_ms

_COLUMNS = "id, user_id, knowledge_id, filename, media_type, size, chunks, created_at"
MAX_TERMS = 32
_TERM = re.compile(r"\w+", re.UNICODE)


def _row(row: Any) -> dict[str, Any]:
    return {
        "id": row[0], "user_id": row[1], "knowledge_id": row[2], "filename": row[3], "media_type": row[4],
        "size": row[5], "chunks": row[6], "created_at": row[7],
    }


class QuotaExceeded(Exception):
    """The user's documents would take more than their quota (bytes of the uploaded files)."""

    def __init__(self, used: int, size: int, quota: int) -> None:
        super().__init__(f"{used} bytes used + {size} > a quota of {quota} bytes")
        self.used = used
        self.size = size
        self.quota = quota


def _usage(tx: WriteTx, user_id: str) -> int:
    return int(tx.fetchone("SELECT COALESCE(SUM(size), 0) FROM documents WHERE user_id = ?", (user_id,))[0])


def insert(tx: WriteTx, doc: dict[str, Any], chunks: list[str], quota: int | None = None) -> dict[str, Any]:
    """Insert a document, its chunks and their index entries (one transaction); return its row.

    With a `quota` (bytes), QuotaExceeded when the user's documents and this one would exceed it:
    checked inside the writer's transaction, so concurrent uploads cannot both slip under it.
    """
    if quota is not None:
        used = _usage(tx, doc["user_id"])
        if used + doc["size"] > quota:
            raise QuotaExceeded(used, doc["size"], quota)
    created_at = now_ms()
    tx.execute(
        f"INSERT INTO documents ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (doc["id"], doc["user_id"], doc["knowledge_id"], doc["filename"], doc["media_type"], doc["size"],
         len(chunks), created_at),
    )
    for seq, text in enumerate(chunks):
        cur = tx.execute("INSERT INTO document_chunks (document_id, seq, text) VALUES (?, ?, ?)", (doc["id"], seq, text))
        if dialect(tx) == "sqlite":  # PostgreSQL's index is a generated tsvector column
            tx.execute("INSERT INTO document_chunks_fts (rowid, text) VALUES (?, ?)", (cur.lastrowid, text))
    return {**doc, "chunks": len(chunks), "created_at": created_at}


def delete(tx: WriteTx, document_id: str) -> None:
    """Remove a document, its chunks and their index entries."""
    rows = tx.fetchall("SELECT id, text FROM document_chunks WHERE document_id = ?", (document_id,)) if dialect(tx) == "sqlite" else []
    for rowid, text in rows:
        tx.execute("INSERT INTO document_chunks_fts (document_chunks_fts, rowid, text) VALUES ('delete', ?, ?)", (rowid, text))
    tx.execute("DELETE FROM document_chunks WHERE document_id = ?", (document_id,))
    tx.execute("DELETE FROM documents WHERE id = ?", (document_id,))


async def usage(conn: aiosqlite.Connection, user_id: str) -> int:
    """The bytes of the user's documents (what counts against their quota)."""
    rows = await conn.execute_fetchall("SELECT COALESCE(SUM(size), 0) FROM documents WHERE user_id = ?", (user_id,))
    return int(next(iter(rows))[0])


async def get(conn: aiosqlite.Connection, document_id: str) -> dict[str, Any] | None:
    rows = list(await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM documents WHERE id = ?", (document_id,)))
    return _row(rows[0]) if rows else None


async def list_for(conn: aiosqlite.Connection, user_id: str, knowledge_id: str | None = None) -> list[dict[str, Any]]:
    """The user's documents (of one knowledge base when given), oldest first."""
    if knowledge_id is None:
        rows = await conn.execute_fetchall(
            f"SELECT {_COLUMNS} FROM documents WHERE user_id = ? ORDER BY created_at, id", (user_id,))
    else:
        rows = await conn.execute_fetchall(
            f"SELECT {_COLUMNS} FROM documents WHERE user_id = ? AND knowledge_id = ? ORDER BY created_at, id",
            (user_id, knowledge_id))
    return [_row(r) for r in rows]


def match_expression(query: str) -> str | None:
    """A user's words as a safe FTS5 query: each term quoted, any term may match (BM25 ranks).

    None when the query holds no searchable term.  FTS5 syntax in the
    input (quotes, NEAR, column filters, `*`, `-`) is never interpreted.
    """
    terms: list[str] = []
    for term in _TERM.findall(query):
        term = term.lower()
        if term not in terms:
            terms.append(term)
        if len(terms) >= MAX_TERMS:
            break
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


# The best chunk of each matching document, best documents first (`hits` ranks chunks: lower is better).
_BEST_PER_DOCUMENT = """), best AS (
    SELECT document_id, rank, snippet,
           row_number() OVER (PARTITION BY document_id ORDER BY rank) AS n
    FROM hits
)
SELECT d.id, d.filename, d.knowledge_id, b.rank, b.snippet
FROM best b JOIN documents d ON d.id = b.document_id
WHERE b.n = 1
ORDER BY b.rank, d.created_at
LIMIT ?
"""

_SEARCH = """
WITH hits AS (
    SELECT c.document_id AS document_id,
           bm25(document_chunks_fts) AS rank,
           snippet(document_chunks_fts, 0, '**', '**', '…', 16) AS snippet
    FROM document_chunks_fts
    JOIN document_chunks c ON c.id = document_chunks_fts.rowid
    JOIN documents d ON d.id = c.document_id
    WHERE document_chunks_fts MATCH ? AND d.user_id = ? {scope}
""" + _BEST_PER_DOCUMENT


async def search(conn: aiosqlite.Connection, user_id: str, match: str, knowledge_id: str | None,
                 limit: int) -> list[dict[str, Any]]:
    """The user's documents that match, best first (one result per document, its best chunk).

    `score` is -bm25 of the best chunk: higher is more relevant.
    """
    postgres = dialect(conn) == "postgresql"
    template, query = (_SEARCH_PG, _tsquery(match)) if postgres else (_SEARCH, match)
    params: tuple[Any, ...]
    if knowledge_id is None:
        sql, params = template.format(scope=""), (query, user_id, limit)
    else:
        sql, params = template.format(scope="AND d.knowledge_id = ?"), (query, user_id, knowledge_id, limit)
    rows = await conn.execute_fetchall(sql, params)
    return [
        {"document_id": r[0], "filename": r[1], "knowledge_id": r[2], "score": round(-float(r[3]), 6), "snippet": r[4]}
        for r in rows
    ]


# PostgreSQL: its own full-text search.  `rank` is minus ts_rank (lower is better, as bm25), so
# the ranking SQL and the score are the same for both stores.
_SEARCH_PG = """
WITH q AS (SELECT to_tsquery('parley', ?) AS query),
hits AS (
    SELECT c.document_id AS document_id,
           -ts_rank(c.tsv, q.query) AS rank,
           ts_headline('parley', c.text, q.query,
                       'StartSel=**, StopSel=**, MaxWords=16, MinWords=4, ShortWord=0, HighlightAll=false') AS snippet
    FROM document_chunks c CROSS JOIN q
    JOIN documents d ON d.id = c.document_id
    WHERE c.tsv @@ q.query AND d.user_id = ? {scope}
""" + _BEST_PER_DOCUMENT


def _tsquery(match: str) -> str:
    """The terms of a `match_expression` as a tsquery where any may match; they are \\w+ words only."""
    return " | ".join(t for t in re.findall(r'"((?:[^"]|"")*)"', match))
