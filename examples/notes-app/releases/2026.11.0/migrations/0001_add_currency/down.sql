DROP INDEX orders_by_currency;
ALTER TABLE orders DROP COLUMN currency;
