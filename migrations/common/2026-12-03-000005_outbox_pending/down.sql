DROP TRIGGER outbox_enqueue ON outbox;
DROP FUNCTION outbox_enqueue();
DROP INDEX outbox_seq;

ALTER TABLE outbox
    ADD COLUMN published_at    timestamptz,
    ADD COLUMN attempts        integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error      text,
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN parked_at       timestamptz;

-- What is not pending was published; when is not known any more.
UPDATE outbox o SET published_at = now()
WHERE NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.seq = o.seq);
UPDATE outbox o SET
    attempts = p.attempts,
    last_error = p.last_error,
    next_attempt_at = p.next_attempt_at,
    parked_at = p.parked_at
FROM outbox_pending p WHERE p.seq = o.seq;

DROP TABLE outbox_pending;

CREATE INDEX outbox_pending ON outbox (partition, seq)
    WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_failing ON outbox (partition, aggregate_id, seq)
    WHERE published_at IS NULL AND (attempts > 0 OR parked_at IS NOT NULL);
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

CREATE FUNCTION outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(122550254464888);
    IF EXISTS (SELECT 1 FROM outbox_relay_member WHERE waiting) THEN
        PERFORM pg_notify('outbox_pending', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify
    AFTER INSERT ON outbox
    FOR EACH STATEMENT
    EXECUTE FUNCTION outbox_notify();
