-- Pending events get a narrow table of their own; `outbox` rows are written
-- once and never updated.
--
-- Marking a row of `outbox` published was an UPDATE that could not be HOT
-- (`published_at` is in the pending index's predicate): every published
-- event wrote a second full copy of its row (payload included) to the heap
-- and the WAL, new entries in three indexes, and a dead tuple for vacuum.
-- Measured draining 200k events: about 1 KB of WAL per event and the table
-- doubled. Now an append inserts the event into `outbox` and its key into
-- `outbox_pending` (one trigger, same transaction), and publishing deletes
-- the key: a few dozen bytes of WAL, no index work, and `outbox` stays the
-- size of what it holds.

-- The index `outbox_pending` takes the name; the table replaces it.
DROP INDEX outbox_pending;
DROP INDEX outbox_failing;
DROP INDEX outbox_published_at;

-- One row per event not yet confirmed by the broker. `id`, `aggregate_id`,
-- `partition` and `created_at` are copies of the event's, so the relay
-- finds its work, orders it and measures its lag without reading `outbox`.
CREATE TABLE outbox_pending (
    seq             bigint      PRIMARY KEY,
    id              uuid        NOT NULL,
    aggregate_id    uuid        NOT NULL,
    partition       smallint    NOT NULL,
    created_at      timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    -- Retry with backoff: not before this time.
    next_attempt_at timestamptz,
    -- Set after too many failed attempts. A parked event blocks only its own
    -- aggregate until an operator retries or skips it.
    parked_at       timestamptz
);

INSERT INTO outbox_pending
    (seq, id, aggregate_id, partition, created_at, attempts, last_error, next_attempt_at, parked_at)
SELECT seq, id, aggregate_id, partition, created_at, attempts, last_error, next_attempt_at, parked_at
FROM outbox WHERE published_at IS NULL;

-- A queue table: rows live seconds, and vacuum should follow the churn, not
-- the table's size (the defaults wait for 20% of it to be dead).
ALTER TABLE outbox_pending SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000);

-- The relay's scan: not parked, per partition in seq order.
CREATE INDEX outbox_pending_due ON outbox_pending (partition, seq) WHERE parked_at IS NULL;
-- Events that failed at least once: they block later events of their aggregate.
CREATE INDEX outbox_pending_failing ON outbox_pending (partition, aggregate_id, seq)
    WHERE attempts > 0 OR parked_at IS NOT NULL;

ALTER TABLE outbox
    DROP COLUMN published_at,
    DROP COLUMN attempts,
    DROP COLUMN last_error,
    DROP COLUMN next_attempt_at,
    DROP COLUMN parked_at;

-- Retention walks the table in seq order; the event browser pages by seq.
CREATE UNIQUE INDEX outbox_seq ON outbox (seq);

-- One statement-level trigger queues what an INSERT wrote (any writer: the
-- services, psql, a bulk load) and wakes a waiting relay. See migration
-- `conditional_notify` for the advisory-lock handshake.
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();

CREATE FUNCTION outbox_enqueue() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_pending (seq, id, aggregate_id, partition, created_at)
    SELECT seq, id, aggregate_id, partition, created_at FROM appended;
    -- 0x6f75_7462_6f78 = "outbox"; the relay takes the same key.
    PERFORM pg_advisory_xact_lock_shared(122550254464888);
    IF EXISTS (SELECT 1 FROM outbox_relay_member WHERE waiting) THEN
        PERFORM pg_notify('outbox_pending', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_enqueue
    AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT
    EXECUTE FUNCTION outbox_enqueue();
