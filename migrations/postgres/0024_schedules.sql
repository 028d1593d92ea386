-- Scheduled runs. One row per (schedule, slot instant), inserted with ON CONFLICT DO NOTHING
-- in the transaction that queues what the slot announces, so a slot fires (or is announced
-- skipped) once across replicas and restarts. outcome: fired, skipped, paused, baseline.
-- Times are microseconds since the Unix epoch.
CREATE TABLE schedule_slots (
    schedule   TEXT NOT NULL,
    slot_at    BIGINT NOT NULL,
    outcome    TEXT NOT NULL,
    claimed_by TEXT NOT NULL,
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (schedule, slot_at)
);

-- Paused schedules (`/schedule pause NAME`): a row while paused, deleted on resume.
CREATE TABLE schedule_pauses (
    schedule  TEXT PRIMARY KEY,
    paused_by TEXT NOT NULL,
    paused_at BIGINT NOT NULL
);
