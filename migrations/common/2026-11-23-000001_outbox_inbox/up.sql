-- The transactional outbox and inbox, present in every service database.
--
-- A service appends to `outbox` in the same transaction as the change that
-- caused the event; the outbox-relay publishes pending rows to RabbitMQ and
-- marks them published only after the broker confirmed them.

CREATE TABLE outbox (
    -- The event id: also the CloudEvents `id` and the AMQP message-id that
    -- consumers deduplicate on.
    id              uuid        PRIMARY KEY,
    aggregate_type  text        NOT NULL,
    aggregate_id    uuid        NOT NULL,
    -- Also the routing key, e.g. `order.placed`.
    event_type      text        NOT NULL,
    -- The message body as sent: a CloudEvents 1.0 JSON envelope.
    payload         jsonb       NOT NULL,
    -- W3C trace context of the transaction that wrote the row
    -- (`traceparent`, `tracestate`), copied into the AMQP headers.
    headers         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    -- Insertion order. Every writer appends an aggregate's events while
    -- holding that aggregate's row lock, so for one aggregate `seq` order is
    -- commit order. Across aggregates `seq` says nothing about commit order,
    -- which is why the relay finds work by pending state and never by a
    -- `seq` high-water mark.
    seq             bigint      GENERATED ALWAYS AS IDENTITY
);

-- What the relay scans: only pending rows, in per-aggregate order. Published
-- rows leave the index, so its size follows the backlog, not the table.
CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL;
-- Retention deletes published rows by age.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX outbox_aggregate ON outbox (aggregate_id, seq);

-- Wake the relay when events are committed. NOTIFY is delivered at commit, so
-- a listener never sees a notification for a row it cannot read yet. The
-- trigger is statement-level: one notification per INSERT statement however
-- many rows it writes, and identical notifications within one transaction
-- are folded into one by PostgreSQL.
CREATE FUNCTION outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox_pending', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify
    AFTER INSERT ON outbox
    FOR EACH STATEMENT
    EXECUTE FUNCTION outbox_notify();

-- Messages a consumer has applied. A handler inserts its row, applies its
-- effect and writes its own outbox rows in one transaction, so a redelivered
-- message finds its row and changes nothing.
CREATE TABLE inbox (
    message_id   uuid        NOT NULL,
    handler      text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, handler)
);

-- Retention deletes old inbox rows by age (kept longer than any redelivery).
CREATE INDEX inbox_processed_at ON inbox (processed_at);
