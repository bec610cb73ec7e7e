-- Leases (SPEC section 14): when instances share one store, the instance running a task holds a
-- lease on it, renewed by heartbeat; another instance ends a task whose lease ran out.  SQLite has
-- one process, which ends whatever it left running when it starts again: the columns stay empty.
ALTER TABLE tasks ADD COLUMN owner TEXT;
ALTER TABLE tasks ADD COLUMN lease_until INTEGER;
CREATE INDEX tasks_leases ON tasks(lease_until) WHERE status IN ('pending', 'running');
