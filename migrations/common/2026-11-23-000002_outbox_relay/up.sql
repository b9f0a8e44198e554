-- What the outbox-relay needs to publish in per-aggregate order with several
-- replicas, to retry with backoff and to park events that keep failing.

-- Work is split by key, not by SKIP LOCKED: every aggregate hashes to one of
-- 32 partitions, and each partition is leased to one relay replica at a time,
-- so one aggregate's events are only ever published by one replica.
ALTER TABLE outbox
    ADD COLUMN partition smallint NOT NULL
        GENERATED ALWAYS AS ((hashtext(aggregate_id::text) & 2147483647) % 32) STORED,
    -- Retry with backoff: not before this time.
    ADD COLUMN next_attempt_at timestamptz,
    -- Set after too many failed attempts. A parked event blocks only its own
    -- aggregate until an operator retries or skips it.
    ADD COLUMN parked_at timestamptz;

-- The relay's scan: pending, not parked, per partition in seq order.
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (partition, seq)
    WHERE published_at IS NULL AND parked_at IS NULL;
-- Events that failed at least once: they block later events of their aggregate.
CREATE INDEX outbox_failing ON outbox (partition, aggregate_id, seq)
    WHERE published_at IS NULL AND (attempts > 0 OR parked_at IS NOT NULL);

-- One row per partition. A replica owns a partition while expires_at is in
-- the future; it renews well before. `epoch` grows with each change of owner.
CREATE TABLE outbox_lease (
    partition  smallint    PRIMARY KEY,
    owner      text,
    epoch      bigint      NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO outbox_lease (partition) SELECT generate_series(0, 31);

-- Live replicas, so each can take its fair share of the partitions.
CREATE TABLE outbox_relay_member (
    owner        text        PRIMARY KEY,
    heartbeat_at timestamptz NOT NULL
);
