-- Payments, owned by the payment service. One per order at most: the saga
-- charges an order once, whatever the number of inventory.reserved copies.

CREATE TABLE payments (
    payment_id        uuid        PRIMARY KEY,
    order_id          uuid        NOT NULL UNIQUE,
    customer_id       uuid        NOT NULL,
    currency          text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount_minor      bigint      NOT NULL CHECK (amount_minor >= 0),
    status            text        NOT NULL CHECK (status IN ('COMPLETED', 'FAILED', 'REFUNDED')),
    -- Why the gateway declined (FAILED) or why the money went back
    -- (REFUNDED); NULL for a COMPLETED payment.
    reason            text        CHECK ((status = 'COMPLETED') = (reason IS NULL)),
    -- The gateway's id of an approved charge; NULL when it declined.
    gateway_reference text        CHECK ((status = 'FAILED') = (gateway_reference IS NULL)),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- ListPayments: newest first, keyset-paginated, with or without a customer.
CREATE INDEX payments_customer_created ON payments (customer_id, created_at DESC, payment_id DESC);
CREATE INDEX payments_created ON payments (created_at DESC, payment_id DESC);

-- Orders cancelled before they were charged (tombstones). order.cancelled and
-- inventory.reserved travel on different queues, so a cancel can overtake
-- the reservation it compensates; the charge handler finds the tombstone and
-- charges nothing.
CREATE TABLE cancelled_orders (
    order_id     uuid        PRIMARY KEY,
    reason       text        NOT NULL,
    cancelled_at timestamptz NOT NULL DEFAULT now()
);
