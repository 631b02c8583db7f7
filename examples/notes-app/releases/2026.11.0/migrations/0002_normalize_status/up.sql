-- Statuses were typed by hand ('Paid', 'paid ', 'OPEN'); normalise them.
-- The original spelling is kept aside by `preserve = ["orders.status"]`.
UPDATE orders SET status = lower(trim(status));
