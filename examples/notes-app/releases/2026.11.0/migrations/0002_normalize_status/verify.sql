SELECT count(*) = 0 FROM orders WHERE status <> lower(trim(status));
