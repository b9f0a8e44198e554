DROP TABLE catalog_words;
DROP TABLE catalog_products;
DROP FUNCTION catalog_tags_text(text[]);
DROP TABLE catalog_generations;
