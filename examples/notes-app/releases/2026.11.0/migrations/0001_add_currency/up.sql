-- Every order gets an explicit currency; existing ones were all in euros.
ALTER TABLE orders ADD COLUMN currency TEXT NOT NULL DEFAULT 'EUR';
CREATE INDEX orders_by_currency ON orders(currency);
