-- Which alert groups changed since their messages were last brought up to date, and who may
-- post a group's first message in a channel, so that among replicas one (the leader)
-- delivers every change, whichever replica stored it, and a group gets one message.
--
-- `version` grows with every stored change of one of the group's alerts (in the statement,
-- or transaction, that stores it); `delivered` is the version the leader last brought every
-- message of the group up to. A group is pending while version > delivered.
CREATE TABLE alert_groups (
    group_key TEXT   PRIMARY KEY,
    version   BIGINT NOT NULL,
    delivered BIGINT NOT NULL
);
CREATE INDEX alert_groups_pending ON alert_groups (group_key) WHERE version > delivered;

-- The claim to post a group's first message in a channel, taken (conditional insert) before
-- the post: by `claimed_by` (a replica's name) at `claimed_at` (microseconds since the Unix
-- epoch). Another replica takes it over only once it is older than any post can take, so a
-- claimer that died between claim and post does not block the group for ever.
CREATE TABLE alert_post_claims (
    group_key  TEXT   NOT NULL,
    platform   TEXT   NOT NULL,
    channel_id TEXT   NOT NULL,
    claimed_by TEXT   NOT NULL,
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (group_key, platform, channel_id)
);
