ALTER TABLE products
    DROP COLUMN description,
    DROP COLUMN category,
    DROP COLUMN tags,
    DROP COLUMN version;
