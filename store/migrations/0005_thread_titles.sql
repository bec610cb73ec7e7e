-- Where a thread's title came from: `given` to POST /thread/, made from the first
-- `message`, or named by the `llm` (only a `message` title is ever replaced by one).
ALTER TABLE threads ADD COLUMN title_source TEXT NOT NULL DEFAULT 'message'
    CHECK (title_source IN ('given', 'message', 'llm'));
