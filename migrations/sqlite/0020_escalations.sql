-- Escalations under way and finished: one row per escalation of a subject (an alert group or
-- an incident) through a policy. Each step is claimed by moving next_step from N to N+1 in
-- the transaction that queues its chat message, so it fires once across replicas and
-- restarts. At most one escalation per subject is active (not stopped). Pages sent are kept
-- (JSON) so stopping acknowledges or resolves them upstream, once (pages_closed_at). Times
-- are microseconds since the Unix epoch.
CREATE TABLE escalations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_kind    TEXT NOT NULL,
    subject_key     TEXT NOT NULL,
    policy          TEXT NOT NULL,
    started_at      INTEGER NOT NULL,
    next_step       INTEGER NOT NULL DEFAULT 0,
    next_due_at     INTEGER,
    pages           TEXT NOT NULL DEFAULT '[]',
    stopped_at      INTEGER,
    stop_reason     TEXT,
    pages_closed_at INTEGER
);
CREATE UNIQUE INDEX escalations_active ON escalations (subject_kind, subject_key)
    WHERE stopped_at IS NULL;
CREATE INDEX escalations_due ON escalations (next_due_at) WHERE stopped_at IS NULL;
CREATE INDEX escalations_to_close ON escalations (id)
    WHERE stopped_at IS NOT NULL AND pages_closed_at IS NULL AND pages <> '[]';
