-- The outbox's notification names the rows queued (their ids, comma-separated), so the
-- leader's deliverer can let pass the notice of a row it has claimed already: every row it
-- queues itself it hears of twice, from its own process at once and from this notification
-- after the commit, and the second wake-up cost a claim that found nothing. A statement
-- that queued no rows notifies no one; one that queued many (more than 100) names none,
-- which wakes every deliverer as before. Same channel as 0021.
CREATE OR REPLACE FUNCTION opsbot_outbox_queued() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n   bigint;
    ids text;
BEGIN
    SELECT count(*), string_agg(id::text, ',') INTO n, ids FROM queued;
    IF n > 0 THEN
        PERFORM pg_notify('opsbot_outbox_' || left(md5(current_schema()), 16),
                          CASE WHEN n <= 100 THEN ids ELSE '' END);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER outbox_queued ON outbox;
CREATE TRIGGER outbox_queued AFTER INSERT ON outbox REFERENCING NEW TABLE AS queued
    FOR EACH STATEMENT EXECUTE FUNCTION opsbot_outbox_queued();
