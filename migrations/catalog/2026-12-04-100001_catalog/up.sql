-- The catalog: a searchable copy of inventory's products, written only by
-- the catalog's event handlers (inventory's events, through the outbox,
-- the relay and the inbox). Owned by the catalog service.

-- Similar words for typo tolerance (a trusted extension: the database's
-- owner may create it).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- A generation is one complete copy of the catalog. Searches read the one
-- SERVING; a rebuild fills a BUILDING one from inventory's snapshot and
-- switches over once it has caught up, so searches go on meanwhile. Events
-- apply to both.
--
-- A rebuild's progress is its generation's row: the snapshot's size as
-- inventory counted it, the pages and products applied, and (once the last
-- page arrived) how many pages there are; when every page is applied the
-- generation becomes SERVING and the previous one's partition is dropped.
CREATE TABLE catalog_generations (
    generation        integer     PRIMARY KEY,
    state             text        NOT NULL CHECK (state IN ('SERVING', 'BUILDING', 'RETIRED')),
    -- NULL for the first generation, which no rebuild made.
    rebuild_id        uuid        UNIQUE,
    products_total    bigint      NOT NULL DEFAULT 0,
    products_applied  bigint      NOT NULL DEFAULT 0,
    pages_applied     bigint      NOT NULL DEFAULT 0,
    -- Known from the page marked last (pages can be applied out of order
    -- when one is retried).
    pages             bigint,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX catalog_generations_one_serving ON catalog_generations (state)
    WHERE state = 'SERVING';
INSERT INTO catalog_generations (generation, state) VALUES (1, 'SERVING');

-- to_tsvector over tags needs an immutable text of them (array_to_string
-- is only stable: other element types format by settings; text does not).
CREATE FUNCTION catalog_tags_text(tags text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN array_to_string(tags, ' ');

-- One partition per generation (catalog_products_g<n>): a rebuild's switch
-- drops the old one at once instead of deleting its rows.
CREATE TABLE catalog_products (
    generation        integer     NOT NULL,
    product_id        uuid        NOT NULL,
    -- NULL until an event with the product's data arrived (a stock event
    -- can overtake it); such an entry is not searchable yet.
    sku               text,
    name              text,
    description       text,
    category          text,
    tags              text[]      NOT NULL DEFAULT '{}',
    currency          text,
    unit_price_minor  bigint,
    available         bigint      NOT NULL DEFAULT 0,
    -- Inventory's product version of the data and of the stock, and the
    -- time of the event that set each: an event applies only if it is not
    -- older (version, then time: version-1 events carry no version).
    -- Data and stock arrive on different streams, so each keeps its own.
    data_version      bigint      NOT NULL DEFAULT -1,
    data_time         timestamptz NOT NULL DEFAULT '-infinity',
    stock_version     bigint      NOT NULL DEFAULT -1,
    stock_time        timestamptz NOT NULL DEFAULT '-infinity',
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- Full-text search: a match in the name outranks one in the category
    -- or tags, which outranks one in the description.
    search            tsvector    GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(name, '')), 'A')
        || setweight(to_tsvector('english', coalesce(category, '') || ' ' || catalog_tags_text(tags)), 'B')
        || setweight(to_tsvector('english', coalesce(description, '')), 'C')
    ) STORED,
    -- The name alone: a search by relevance ranks the products whose names
    -- hold the words first. An index over it answers that without reading
    -- rows (a weight-A query on `search` is rechecked row by row: 85 ms for
    -- two words of which one is in no name, over 1,000,000 products).
    name_search       tsvector    GENERATED ALWAYS AS (
        to_tsvector('english', coalesce(name, ''))
    ) STORED,
    PRIMARY KEY (generation, product_id)
) PARTITION BY LIST (generation);
CREATE TABLE catalog_products_g1 PARTITION OF catalog_products FOR VALUES IN (1);

-- Every index costs each applied product (measured: 100,000 products in
-- 3.5 s with a trigram index over name, category and tags and B-trees for
-- sorting by price and filtering by category; 2.4 s with these, 1.9 s
-- without the trigram index): filters and sorts other than the default run
-- over what the query matched.
CREATE INDEX catalog_products_search ON catalog_products USING gin (search);
CREATE INDEX catalog_products_name_search ON catalog_products USING gin (name_search);
-- Browsing without a query, by name.
CREATE INDEX catalog_products_by_name ON catalog_products (generation, name, product_id);

-- Typo tolerance: every word (3 letters or more, lowercase) of the names,
-- categories and tags applied so far, with a trigram index. A query whose
-- words find nothing is searched again with each word replaced by its most
-- similar one here: a lookup in a table of distinct words instead of a
-- trigram match over every product's name (36 ms for one word over
-- 1,000,000 names). Shared by the generations: a word no product holds any
-- more only suggests a search that finds nothing.
CREATE TABLE catalog_words (
    word text PRIMARY KEY
);
CREATE INDEX catalog_words_trigrams ON catalog_words USING gin (word gin_trgm_ops);
