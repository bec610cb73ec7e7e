-- Plans and credits (SPEC section 10), per user id (JWT `sub`, X-User-Id or a local account's id).
-- A user without a row is on the default plan with the plan's starting balance; the row is made
-- the first time the server writes for the user (a run start, a debit, a grant, a plan change).
CREATE TABLE user_plans (
    user_id     TEXT PRIMARY KEY,
    plan        TEXT,             -- NULL: the configured default plan
    credits     INTEGER CHECK (credits IS NULL OR credits >= 0),  -- NULL: not yet given the plan's balance
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Every change of a balance (and every plan change, delta 0), for auditing: whose, how much, why, who, when.
CREATE TABLE credit_ledger (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT NOT NULL,
    delta       INTEGER NOT NULL,
    balance     INTEGER NOT NULL, -- the balance after the change
    reason      TEXT NOT NULL,    -- initial, tool:NAME, refund:NAME, grant, plan
    actor       TEXT NOT NULL,    -- system, task:ID, admin-cli, mcp
    task_id     TEXT,
    note        TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX credit_ledger_by_user ON credit_ledger(user_id, id);

-- Runs a user started today (the plan's runs_per_day).
CREATE INDEX tasks_by_user ON tasks(user_id, created_at);

-- Plans set on local accounts before plans were enforced carry over (the balance is given on first use).
INSERT INTO user_plans (user_id, plan, credits, created_at, updated_at)
    SELECT id, plan, NULL, created_at, created_at FROM users WHERE plan <> 'free';
