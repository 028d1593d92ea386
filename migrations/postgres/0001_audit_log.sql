-- Append-only, hash-chained audit log. `at` is microseconds since the Unix epoch (UTC).
CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    request_id TEXT   NOT NULL,
    at         BIGINT NOT NULL,
    actor      TEXT   NOT NULL,
    channel    TEXT   NOT NULL,
    command    TEXT   NOT NULL,
    args       TEXT   NOT NULL,
    outcome    TEXT   NOT NULL,
    detail     TEXT   NOT NULL,
    prev_hash  TEXT   NOT NULL,
    hash       TEXT   NOT NULL
);

CREATE INDEX audit_log_request_id ON audit_log (request_id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
