-- Pages escalation steps send (triggers), recorded in the transaction that claims the step,
-- so a crash between the claim and the send loses no page: the leader's next tick sends
-- every unsent one (PagerDuty's dedup_key makes a resend after a crash mid-send harmless).
-- An attempt is claimed by moving next_attempt_at past now (attempts + 1); sent_at ends the
-- row, with outcome sent, rejected (refused for good), given_up (still failing after every
-- attempt) or cancelled (the escalation stopped before it went out). Times are microseconds
-- since the Unix epoch.
CREATE TABLE escalation_pages (
    id              BIGSERIAL PRIMARY KEY,
    escalation_id   BIGINT NOT NULL REFERENCES escalations (id),
    service         TEXT NOT NULL,
    dedup_key       TEXT NOT NULL,
    summary         TEXT NOT NULL,
    source          TEXT NOT NULL,
    severity        TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    sent_at         BIGINT,
    outcome         TEXT
);
CREATE INDEX escalation_pages_unsent ON escalation_pages (next_attempt_at) WHERE sent_at IS NULL;
