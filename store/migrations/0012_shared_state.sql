-- The tables a shared store keeps its secrets, files and rate limits in (store/migrations_pg/
-- 0002_shared_state.sql), so that the store modules over them (store/secrets.py, blobs.py, limits.py)
-- are one interface on both stores.  The SQLite store serves one process: its server keeps the secrets
-- under data_dir/keys, the files under data_dir and the rate limits in memory, so these tables stay empty.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE blobs (
    name       TEXT PRIMARY KEY,
    data       BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- `hits`: a JSON array of epoch ms, oldest first (PostgreSQL: BIGINT[]).
CREATE TABLE rate_limits (
    key        TEXT PRIMARY KEY,
    hits       TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX rate_limits_expiry ON rate_limits(expires_at);
