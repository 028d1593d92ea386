-- Request ids are random, so this index put every audit insert on a random page (12x the
-- WAL written per record, measured in docs/benchmarks.md) while nothing queries by it.
DROP INDEX IF EXISTS audit_log_request_id;
