-- Tells every replica's deliverer, at commit, that the outbox has a new row: a row queued
-- on a follower is otherwise found only by the leader's next poll (up to a second later).
-- One notification per statement; Postgres folds identical ones within a transaction. The
-- channel is named after the schema (hashed: channel names stop at 63 bytes), so opsbots
-- sharing a database in separate schemas do not wake each other; `store/postgres.rs`
-- listens on the same name. Postgres only: on SQLite one process queues everything and
-- wakes its deliverer itself.
CREATE FUNCTION opsbot_outbox_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('opsbot_outbox_' || left(md5(current_schema()), 16), '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_queued AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION opsbot_outbox_queued();
