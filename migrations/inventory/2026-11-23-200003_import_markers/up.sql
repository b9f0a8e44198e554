-- Duplicate SKUs in an import file are found through the products they
-- touch instead of a table of every SKU an import has seen: writing that
-- table cost about as much as the upsert itself (measured on 2M rows).
--
-- Each product remembers the import row that last set it: the file's
-- content (`import_source`, a UUID derived from what the client says
-- identifies the file, or the import id) and the row number. A later row
-- of the same source with the same SKU is refused ("already given on row
-- N"), in the same import, across resumed streams, and when the same file
-- is imported again, so a re-run changes nothing. Other writers
-- (UpsertProduct, AdjustStock, the saga) leave the marker alone.
DROP TABLE stock_import_skus;

ALTER TABLE products
    ADD COLUMN import_source uuid,
    ADD COLUMN import_row    bigint;

-- The source every chunk of the import marks products with; NULL means the
-- import id.
ALTER TABLE stock_imports ADD COLUMN source uuid;
