-- Handoffs announced in chat: one row per (schedule, layer, handoff time), inserted in the
-- transaction that queues the announcement, so a handoff is announced once across replicas
-- and restarts. Times are microseconds since the Unix epoch.
CREATE TABLE oncall_handoffs (
    schedule     TEXT NOT NULL,
    layer        TEXT NOT NULL,
    at           BIGINT NOT NULL,
    announced_at BIGINT NOT NULL,
    PRIMARY KEY (schedule, layer, at)
);
