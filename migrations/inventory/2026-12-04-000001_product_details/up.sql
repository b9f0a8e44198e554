-- What a customer searches (the catalog service reads it from events), and a
-- version per product that every event about the product carries.
--
-- `version` grows by one with every write that changes a product's
-- catalogue data or its units on hand (upsert, adjustment, import,
-- reservation, release) and the event of that write carries it, so a
-- reader that follows products over several streams keeps the newest state
-- whatever order events arrive in. Committing a reservation moves units
-- out of `reserved` only: what can be sold does not change, nor does the
-- version.
ALTER TABLE products
    ADD COLUMN description text CHECK (char_length(description) <= 2000),
    ADD COLUMN category    text CHECK (char_length(category) BETWEEN 1 AND 100),
    ADD COLUMN tags        text[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 20),
    ADD COLUMN version     bigint NOT NULL DEFAULT 0;
