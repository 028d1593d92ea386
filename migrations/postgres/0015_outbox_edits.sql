-- Edits through the outbox: a row with `edit_of` replaces that message (its platform's id,
-- in the row's channel) instead of posting a new one. Only the newest pending edit of a
-- message is worth sending: queuing one marks the older pending edits of that message done
-- (`last_error` 'superseded'), found through `outbox_pending_edits`.
ALTER TABLE outbox ADD COLUMN edit_of TEXT;
CREATE INDEX outbox_pending_edits ON outbox (platform, channel_id, edit_of)
    WHERE state = 'pending' AND edit_of IS NOT NULL;
