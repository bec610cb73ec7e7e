-- A message keeps the id its client gave it through edits and regenerations (issue 10): a rewind
-- supersedes the old row and the new one takes the same id.  So an id is unique among the live
-- messages of a thread only, and a row is known by its place in the thread (seq).
CREATE TABLE messages_by_seq (
    thread_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    role        TEXT NOT NULL,
    parts       TEXT NOT NULL,
    metadata    TEXT,
    task_id     TEXT,
    created_at  INTEGER NOT NULL,
    superseded  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (thread_id, seq)
);
INSERT INTO messages_by_seq (thread_id, id, seq, role, parts, metadata, task_id, created_at, superseded)
    SELECT thread_id, id, seq, role, parts, metadata, task_id, created_at, superseded FROM messages;
DROP TABLE messages;
ALTER TABLE messages_by_seq RENAME TO messages;
CREATE UNIQUE INDEX messages_live_id ON messages(thread_id, id) WHERE superseded = 0;
CREATE INDEX messages_by_id ON messages(thread_id, id, seq);
