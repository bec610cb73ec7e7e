-- Parley's schema on PostgreSQL: the same tables as the SQLite migrations 0001-0010 (store/migrations/),
-- in PostgreSQL's types.  Times are epoch milliseconds (BIGINT), JSON is stored as text as on SQLite
-- (the store encodes it once, with orjson), flags are 0/1 integers so that the same SQL serves both.
CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS unaccent;

-- Full-text search as SQLite's FTS5 tokenizer does it (`porter unicode61 remove_diacritics 2`):
-- English stems, accents removed (café matches cafe).
CREATE TEXT SEARCH CONFIGURATION parley (COPY = english);
ALTER TEXT SEARCH CONFIGURATION parley ALTER MAPPING FOR hword, hword_part, word WITH unaccent, english_stem;

CREATE TABLE threads (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    title        TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    deleted_at   BIGINT,
    title_source TEXT NOT NULL DEFAULT 'message' CHECK (title_source IN ('given', 'message', 'llm'))
);
CREATE INDEX threads_by_user ON threads(user_id, updated_at);

CREATE TABLE messages (
    thread_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    role        TEXT NOT NULL,
    parts       TEXT NOT NULL,
    metadata    TEXT,
    task_id     TEXT,
    created_at  BIGINT NOT NULL,
    superseded  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (thread_id, seq)
);
CREATE UNIQUE INDEX messages_live_id ON messages(thread_id, id) WHERE superseded = 0;
CREATE INDEX messages_by_id ON messages(thread_id, id, seq);

CREATE TABLE tasks (
    id                   TEXT PRIMARY KEY,
    thread_id            TEXT NOT NULL,
    user_id              TEXT NOT NULL,
    agent_id             TEXT NOT NULL,
    status               TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    started_at           BIGINT,
    finished_at          BIGINT,
    current_node         TEXT,
    error                TEXT,
    parked               TEXT,
    state                TEXT,
    user_message_id      TEXT,
    assistant_message_id TEXT NOT NULL,
    assistant_seq        INTEGER NOT NULL,
    client_run_id        TEXT,
    owner                TEXT,    -- the instance running it (store/tasks.py `claim`) ...
    lease_until          BIGINT   -- ... until then, unless its heartbeat renews the lease
);
-- The dedup lock: at most one live task per thread, enforced by the store itself.
CREATE UNIQUE INDEX tasks_live_per_thread ON tasks(thread_id) WHERE status IN ('pending', 'running', 'parked');
CREATE INDEX tasks_by_thread ON tasks(thread_id, created_at);
CREATE INDEX tasks_by_status ON tasks(status);
CREATE INDEX tasks_by_agent ON tasks(agent_id, user_id, created_at);
CREATE INDEX tasks_by_user ON tasks(user_id, created_at);
CREATE INDEX tasks_running_by_user ON tasks(user_id) WHERE status IN ('pending', 'running');
CREATE INDEX tasks_leases ON tasks(lease_until) WHERE status IN ('pending', 'running');

-- The event log.  Ids come from event_counter, taken inside the committing transaction (store/postgres.py):
-- the row lock orders the committing transactions, so ids rise in commit order on every instance.
CREATE TABLE events (
    id          BIGINT PRIMARY KEY,
    task_id     TEXT NOT NULL,
    thread_id   TEXT NOT NULL,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX events_by_task ON events(task_id, id);
CREATE INDEX events_by_thread ON events(thread_id, id);
CREATE INDEX events_files_by_task ON events(task_id, id) WHERE type = 'file';
CREATE INDEX events_files_by_thread ON events(thread_id, id) WHERE type = 'file';

CREATE TABLE event_counter (
    only_row  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    last_id   BIGINT NOT NULL
);
INSERT INTO event_counter (only_row, last_id) VALUES (TRUE, 0);

CREATE TABLE agents (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    type         TEXT NOT NULL,
    llm          TEXT,
    tools        TEXT NOT NULL,
    instructions TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL
);
CREATE INDEX agents_by_user ON agents(user_id);

CREATE TABLE documents (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    knowledge_id TEXT NOT NULL,
    filename     TEXT NOT NULL,
    media_type   TEXT NOT NULL,
    size         BIGINT NOT NULL,
    chunks       INTEGER NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX documents_by_user ON documents(user_id, knowledge_id, created_at);

-- Full-text search with PostgreSQL's own tsvector (the SQLite store uses FTS5).
CREATE TABLE document_chunks (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    text        TEXT NOT NULL,
    tsv         tsvector GENERATED ALWAYS AS (to_tsvector('parley', text)) STORED,
    UNIQUE (document_id, seq)
);
CREATE INDEX document_chunks_tsv ON document_chunks USING GIN (tsv);

CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    email              TEXT NOT NULL UNIQUE,
    username           CITEXT NOT NULL UNIQUE,
    password_hash      TEXT NOT NULL,
    avatar_url         TEXT,
    bio                TEXT,
    plan               TEXT NOT NULL DEFAULT 'free',
    created_at         BIGINT NOT NULL,
    email_confirmed_at BIGINT
);

CREATE TABLE pending_signups (
    email         TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    code_hash     TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_sent_at  BIGINT NOT NULL,
    redirect_to   TEXT,
    created_at    BIGINT NOT NULL
);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    family_id   TEXT NOT NULL,
    parent_hash TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    rotated_at  BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens(family_id);
CREATE INDEX refresh_tokens_by_user ON refresh_tokens(user_id);

CREATE TABLE user_plans (
    user_id     TEXT PRIMARY KEY,
    plan        TEXT,
    credits     INTEGER CHECK (credits IS NULL OR credits >= 0),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE credit_ledger (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     TEXT NOT NULL,
    delta       INTEGER NOT NULL,
    balance     INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    task_id     TEXT,
    note        TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX credit_ledger_by_user ON credit_ledger(user_id, id);

CREATE TABLE attachments (
    bucket      TEXT NOT NULL,
    path        TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    thread_id   TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (bucket, path)
);
CREATE INDEX attachments_by_user ON attachments(user_id, created_at);
