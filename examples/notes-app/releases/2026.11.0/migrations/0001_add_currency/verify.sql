SELECT count(*) = 0 FROM orders WHERE currency IS NULL OR length(currency) <> 3;
SELECT count(*) = 1 FROM pragma_index_list('orders') WHERE name = 'orders_by_currency';
