-- Alerts (one row per fingerprint, updated in place), the chat message each alert group
-- is shown in, and silences. Times are microseconds since the Unix epoch.
CREATE TABLE alerts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint   TEXT   NOT NULL UNIQUE,
    source        TEXT   NOT NULL,
    group_key     TEXT   NOT NULL,
    status        TEXT   NOT NULL,
    labels        TEXT   NOT NULL,  -- JSON object
    annotations   TEXT   NOT NULL,  -- JSON object
    starts_at     BIGINT NOT NULL,
    ends_at       BIGINT,
    generator_url TEXT,
    first_seen    BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    acked_by      TEXT,
    acked_at      BIGINT,
    resolved_at   BIGINT
);
CREATE INDEX alerts_by_group ON alerts (group_key);
CREATE INDEX alerts_by_status ON alerts (status, last_seen);

CREATE TABLE alert_messages (
    group_key  TEXT NOT NULL,
    platform   TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    last_text  TEXT NOT NULL,
    PRIMARY KEY (group_key, platform, channel_id)
);

CREATE TABLE silences (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    matchers   TEXT   NOT NULL,  -- JSON array of "label=value" / "label=~regex"
    created_by TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    starts_at  BIGINT NOT NULL,
    ends_at    BIGINT NOT NULL
);
