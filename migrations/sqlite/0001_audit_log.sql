-- Append-only, hash-chained audit log. `at` is microseconds since the Unix epoch (UTC).
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    request_id TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    channel    TEXT    NOT NULL,
    command    TEXT    NOT NULL,
    args       TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    detail     TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);

CREATE INDEX audit_log_request_id ON audit_log (request_id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
