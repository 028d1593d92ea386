-- The durable outbox: the bot's one-off chat messages (sweep notices, runbook results),
-- written when they are decided and delivered by the leader, so a crash between "decided"
-- and "posted" loses nothing. `body` is the message as JSON (text and buttons); `urgent`
-- is its lane. A pending row is due at `next_attempt_at`; a deliverer claims it by moving
-- that time forward (one conditional update), so two deliverers never take one row.
-- Times are microseconds since the Unix epoch.
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    platform        TEXT    NOT NULL,
    channel_id      TEXT    NOT NULL,
    thread          TEXT,
    body            TEXT    NOT NULL,
    urgent          BOOLEAN NOT NULL,
    created_at      BIGINT  NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'done', 'given_up')),
    message_id      TEXT,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_finished ON outbox (created_at) WHERE state <> 'pending';
