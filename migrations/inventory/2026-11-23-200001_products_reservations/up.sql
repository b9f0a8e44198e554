-- The product catalogue with its stock, and the reservations the saga makes
-- for orders. Owned by the inventory service.

CREATE TABLE products (
    product_id        uuid        PRIMARY KEY,
    -- The unique key also serves ListProducts (ordered by sku, keyset).
    sku               text        NOT NULL UNIQUE CHECK (char_length(sku) BETWEEN 1 AND 64),
    name              text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    currency          text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    unit_price_minor  bigint      NOT NULL CHECK (unit_price_minor >= 0),
    -- Units that can still be sold: reserving moves units from on_hand to
    -- reserved, releasing moves them back, committing removes them from
    -- reserved. The checks are the last line against overselling.
    on_hand           bigint      NOT NULL CHECK (on_hand >= 0),
    reserved          bigint      NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per order the saga told us about, whatever the outcome: its
-- existence is what makes order.placed idempotent, and a CANCELLED row is
-- the tombstone of an order cancelled before its order.placed arrived.
CREATE TABLE reservations (
    order_id    uuid        PRIMARY KEY,
    status      text        NOT NULL
                CHECK (status IN ('RESERVED', 'REJECTED', 'RELEASED', 'COMMITTED', 'CANCELLED')),
    -- Why it was rejected, released or cancelled; NULL while RESERVED or COMMITTED.
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- What a reservation holds; written only for reservations that took stock
-- (kept after release or commit, for the record).
CREATE TABLE reservation_lines (
    order_id    uuid    NOT NULL REFERENCES reservations (order_id) ON DELETE CASCADE,
    product_id  uuid    NOT NULL REFERENCES products (product_id),
    quantity    integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);

-- The foreign key's lookups (a product's reservations).
CREATE INDEX reservation_lines_product ON reservation_lines (product_id);
