-- Event ids are forgotten a day after they arrived (no platform redelivers later than that);
-- the sweep deletes by arrival time.
CREATE INDEX platform_events_received_at ON platform_events (received_at);
