DROP TABLE stock_import_skus;
DROP TABLE stock_import_errors;
DROP TABLE stock_imports;
