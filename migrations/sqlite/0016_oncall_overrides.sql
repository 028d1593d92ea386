-- On-call overrides made from chat (/oncall override): PERSON stands in for a schedule
-- layer's rotation from starts_at until ends_at. Kept after they end, for the record.
-- Times are microseconds since the Unix epoch.
CREATE TABLE oncall_overrides (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule   TEXT   NOT NULL,
    layer      TEXT   NOT NULL,
    person     TEXT   NOT NULL,
    starts_at  INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL,
    created_by TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX oncall_overrides_ends ON oncall_overrides (ends_at);
