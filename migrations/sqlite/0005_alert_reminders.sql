-- Reminders for unacknowledged critical alerts.
ALTER TABLE alerts ADD COLUMN reminded_at BIGINT;
ALTER TABLE alerts ADD COLUMN reminders INTEGER NOT NULL DEFAULT 0;
