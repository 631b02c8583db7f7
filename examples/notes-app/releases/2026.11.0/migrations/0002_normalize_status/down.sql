-- Put back the original spelling from the preserved copy.
UPDATE orders SET status = (
    SELECT p.status FROM _rewind_preserve_0002_normalize_status_orders AS p WHERE p.id = orders.id
) WHERE id IN (SELECT id FROM _rewind_preserve_0002_normalize_status_orders);
