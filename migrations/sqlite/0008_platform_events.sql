-- Platform event ids already handled, so redeliveries (Slack retries, duplicate gateway
-- events, another replica) are ignored. Times are microseconds since the Unix epoch.
CREATE TABLE platform_events (
    platform    TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (platform, event_id)
);
