-- Incidents, their timelines and linked alerts. Times are microseconds since the Unix epoch.
CREATE TABLE incidents (
    id          BIGSERIAL PRIMARY KEY,
    title       TEXT   NOT NULL,
    severity    TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    commander   TEXT   NOT NULL,
    platform    TEXT   NOT NULL,
    channel_id  TEXT   NOT NULL,
    opened_by   TEXT   NOT NULL,
    opened_at   BIGINT NOT NULL,
    acked_at    BIGINT,
    resolved_at BIGINT,
    reminded_at BIGINT
);
-- At most one open incident per channel.
CREATE UNIQUE INDEX incidents_open_per_channel ON incidents (platform, channel_id) WHERE status = 'open';

CREATE TABLE incident_timeline (
    id          BIGSERIAL PRIMARY KEY,
    incident_id BIGINT NOT NULL REFERENCES incidents (id),
    at          BIGINT NOT NULL,
    kind        TEXT   NOT NULL,
    actor       TEXT   NOT NULL,
    text        TEXT   NOT NULL
);
CREATE INDEX incident_timeline_by_incident ON incident_timeline (incident_id, at);

CREATE TABLE incident_alerts (
    incident_id BIGINT NOT NULL REFERENCES incidents (id),
    alert_id    BIGINT NOT NULL REFERENCES alerts (id),
    PRIMARY KEY (incident_id, alert_id)
);
