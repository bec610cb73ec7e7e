-- The media routes (SPEC section 10) read a task's or a thread's `file` events: partial
-- indexes hold only those rows, so the reads never walk the other events of a long run
-- (a `/count 1000000` task has a million), and cost nothing for events of other types.
CREATE INDEX events_files_by_task ON events(task_id, id) WHERE type = 'file';
CREATE INDEX events_files_by_thread ON events(thread_id, id) WHERE type = 'file';
