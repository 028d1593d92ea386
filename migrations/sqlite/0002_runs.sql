-- Runbook requests and their approval votes. Times are microseconds since the Unix epoch.
CREATE TABLE runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    command          TEXT    NOT NULL,
    args             TEXT    NOT NULL,  -- JSON array of [name, value]
    rendered         TEXT    NOT NULL,
    action_hash      TEXT    NOT NULL,
    requester        TEXT    NOT NULL,  -- platform:user_id
    requester_name   TEXT    NOT NULL,
    platform         TEXT    NOT NULL,
    channel_id       TEXT    NOT NULL,
    channel_name     TEXT    NOT NULL,
    thread           TEXT,
    message_id       TEXT,
    approvals_needed INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    break_glass      TEXT,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    lease_until      INTEGER,
    updated_at       INTEGER NOT NULL,
    result_code      INTEGER,
    duration_ms      INTEGER,
    output           TEXT,
    truncated        BOOLEAN
);
CREATE INDEX runs_by_message ON runs (platform, channel_id, message_id);
CREATE INDEX runs_by_state ON runs (state);

CREATE TABLE run_votes (
    run_id        INTEGER NOT NULL REFERENCES runs (id),
    approver      TEXT    NOT NULL,
    approver_name TEXT    NOT NULL,
    action_hash   TEXT    NOT NULL,
    at            INTEGER NOT NULL,
    PRIMARY KEY (run_id, approver)
);
