-- Agent definitions created through the API (built-in and configured agents live in memory).
CREATE TABLE agents (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    type         TEXT NOT NULL,
    llm          TEXT,
    tools        TEXT NOT NULL,
    instructions TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL
);
CREATE INDEX tasks_by_agent ON tasks(agent_id, user_id, created_at);
