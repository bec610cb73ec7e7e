-- Attachments uploaded on the Agent API (SPEC section 8): who owns which stored file.
-- The file lives under data_dir/attachments/<bucket>/<path>; `path` is server-made
-- (<the owner's folder>/<uuid>.<ext>), never the client's file name, which is kept in `name`
-- for display only.  `media_type` is the verified type (extension and content agree).
CREATE TABLE attachments (
    bucket      TEXT NOT NULL,
    path        TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    thread_id   TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (bucket, path)
);
CREATE INDEX attachments_by_user ON attachments(user_id, created_at);
