ALTER TABLE stock_imports DROP COLUMN source;
ALTER TABLE products DROP COLUMN import_row, DROP COLUMN import_source;
CREATE TABLE stock_import_skus (
    import_id   uuid   NOT NULL,
    sku         text   NOT NULL,
    row_number  bigint NOT NULL,
    PRIMARY KEY (import_id, sku)
);
