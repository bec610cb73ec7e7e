-- Uploaded documents, their text in chunks, and a full-text index over the chunks (SPEC sections 7, 11).
-- The original file lives under data_dir/documents/<id>; the index is kept in step from Python
-- (store/documents.py), since the migration splitter allows no triggers.
CREATE TABLE documents (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    knowledge_id TEXT NOT NULL,
    filename     TEXT NOT NULL,
    media_type   TEXT NOT NULL,
    size         INTEGER NOT NULL,
    chunks       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX documents_by_user ON documents(user_id, knowledge_id, created_at);

CREATE TABLE document_chunks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    text        TEXT NOT NULL,
    UNIQUE (document_id, seq)
);

-- External content: the text is stored once (document_chunks); rowid = document_chunks.id.
CREATE VIRTUAL TABLE document_chunks_fts USING fts5(
    text,
    content = 'document_chunks',
    content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
