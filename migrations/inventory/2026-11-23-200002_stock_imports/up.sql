-- Bulk stock imports (ImportStock): one row per import with its progress and
-- counts, the rows it rejected, and the SKUs it has seen so far.

-- Updated in every chunk's transaction, under this row's lock, so its
-- counts and last_row_number always match what is committed: a client
-- resumes after last_row_number.
CREATE TABLE stock_imports (
    import_id        uuid        PRIMARY KEY,
    last_row_number  bigint      NOT NULL DEFAULT 0,
    rows             bigint      NOT NULL DEFAULT 0,
    inserted         bigint      NOT NULL DEFAULT 0,
    updated          bigint      NOT NULL DEFAULT 0,
    unchanged        bigint      NOT NULL DEFAULT 0,
    rejected         bigint      NOT NULL DEFAULT 0,
    started_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- Set when a stream of the import ended normally; no rows can follow.
    finished_at      timestamptz
);

-- Every rejected row, listed by ListStockImportErrors in row order.
CREATE TABLE stock_import_errors (
    import_id   uuid   NOT NULL REFERENCES stock_imports (import_id) ON DELETE CASCADE,
    row_number  bigint NOT NULL,
    -- As sent (sanitised, at most 64 characters): it may be the problem.
    sku         text   NOT NULL,
    reason      text   NOT NULL,
    PRIMARY KEY (import_id, row_number)
);

-- The SKUs an unfinished import has accepted, with the row that gave each:
-- a SKU given twice in one file is rejected the second time (the first row
-- wins), so a re-run of the same file changes nothing. Emptied when the
-- import finishes. No foreign key: it would cost a lookup per row.
CREATE TABLE stock_import_skus (
    import_id   uuid   NOT NULL,
    sku         text   NOT NULL,
    row_number  bigint NOT NULL,
    PRIMARY KEY (import_id, sku)
);
