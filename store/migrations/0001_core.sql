-- Core model: threads, messages, tasks and the one event log (SPEC section 3).
CREATE TABLE threads (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    title       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    deleted_at  INTEGER
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
    created_at  INTEGER NOT NULL,
    superseded  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (thread_id, id),
    UNIQUE (thread_id, seq)
);

CREATE TABLE tasks (
    id                   TEXT PRIMARY KEY,
    thread_id            TEXT NOT NULL,
    user_id              TEXT NOT NULL,
    agent_id             TEXT NOT NULL,
    status               TEXT NOT NULL,
    created_at           INTEGER NOT NULL,
    started_at           INTEGER,
    finished_at          INTEGER,
    current_node         TEXT,
    error                TEXT,
    parked               TEXT,
    state                TEXT,
    user_message_id      TEXT,
    assistant_message_id TEXT NOT NULL,
    assistant_seq        INTEGER NOT NULL,
    client_run_id        TEXT
);
-- The dedup lock: at most one live task per thread, enforced by the store itself.
CREATE UNIQUE INDEX tasks_live_per_thread ON tasks(thread_id)
    WHERE status IN ('pending', 'running', 'parked');
CREATE INDEX tasks_by_thread ON tasks(thread_id, created_at);
CREATE INDEX tasks_by_status ON tasks(status);

-- AUTOINCREMENT: an id is never reused, not even after rows are deleted.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     TEXT NOT NULL,
    thread_id   TEXT NOT NULL,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX events_by_task ON events(task_id, id);
CREATE INDEX events_by_thread ON events(thread_id, id);
