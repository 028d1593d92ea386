-- The id of the same silence in Alertmanager, when it was written back there.
ALTER TABLE silences ADD COLUMN upstream_id TEXT;
