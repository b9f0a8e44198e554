-- Orders and their lines, owned by the order service.

CREATE TABLE orders (
    id              uuid        PRIMARY KEY,
    -- The client's idempotency key: a retried CreateOrder with the same
    -- request_id returns this order and writes nothing.
    request_id      uuid        NOT NULL UNIQUE,
    -- SHA-256 of the canonical request, so a request_id reused for a
    -- different request is refused instead of silently returning this order.
    request_hash    bytea       NOT NULL,
    customer_id     uuid        NOT NULL,
    customer_email  text        NOT NULL CHECK (char_length(customer_email) BETWEEN 3 AND 254),
    status          text        NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
    -- Why an order was cancelled; set exactly when status = 'CANCELLED'.
    cancel_reason   text        CHECK ((status = 'CANCELLED') = (cancel_reason IS NOT NULL)),
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total_minor     bigint      NOT NULL CHECK (total_minor >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- ListOrders: a customer's orders, newest first, keyset-paginated.
CREATE INDEX orders_customer_created ON orders (customer_id, created_at DESC, id DESC);
-- ListOrders without a customer filter.
CREATE INDEX orders_created ON orders (created_at DESC, id DESC);

CREATE TABLE order_lines (
    order_id          uuid    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no           integer NOT NULL CHECK (line_no >= 0),
    product_id        uuid    NOT NULL,
    quantity          integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    unit_price_minor  bigint  NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, line_no)
);
