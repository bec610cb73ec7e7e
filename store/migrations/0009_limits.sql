-- Per-user bounds counted inside the writer transaction (SPEC section 13, trust boundaries):
-- the runs of a user that are pending or running (parked ones do not count) ...
CREATE INDEX tasks_running_by_user ON tasks(user_id) WHERE status IN ('pending', 'running');
-- ... and the agents a user created through the API.
CREATE INDEX agents_by_user ON agents(user_id);
