-- State that every instance sharing the database must see alike (SPEC section 14, shared state).

-- The server's secrets: the JWT signing key (PEM), the stream-token and attachment-URL HMAC keys,
-- the accounts' pepper.  Made by the first instance that starts (INSERT … ON CONFLICT DO NOTHING,
-- then read back, so instances starting together agree), never changed afterwards.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- The bytes of uploaded files (attachments, documents' originals) by server-made name
-- ("attachments/<bucket>/<path>", "documents/<id>"), written in the transaction that records them.
-- A few MB at most each; kept out of line and uncompressed (most are compressed already).
CREATE TABLE blobs (
    name       TEXT PRIMARY KEY,
    data       BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL;

-- Rate limits counted for all instances (auth/ratelimit.py SharedWindow, store/limits.py): per key
-- ("<limit name>:<user, address or email>"), the epoch ms of the hits in the sliding window, oldest
-- first.  One statement locks the key's row, drops the hits that left the window and adds the new
-- one when there is room.  Rows whose last hit has left the window are deleted from time to time.
CREATE TABLE rate_limits (
    key        TEXT PRIMARY KEY,
    hits       BIGINT[] NOT NULL,
    allowed    BOOLEAN NOT NULL,  -- whether the last hit was let through (read back by the same statement)
    expires_at BIGINT NOT NULL    -- when the newest hit leaves the window: the row may go then
);
CREATE INDEX rate_limits_expiry ON rate_limits(expires_at);
