-- view: customer_event
-- When each customer was active, as (customer, time): their visits (from the session mart,
-- which already holds the first and last event of every visit, so the clickstream is not
-- read again) and their orders. A customer's portrait is computed as of their newest
-- event, so it depends only on their own history and not on when the mart happened to run.
SELECT customer_id, started_ms AS ts FROM mart.session
UNION ALL SELECT customer_id, last_event_ms FROM mart.session
UNION ALL SELECT customer_id, unix_millis(event_time) FROM raw.store_order
UNION ALL SELECT customer_id, unix_millis(event_time) FROM raw.partner_stroydom_order
UNION ALL SELECT customer_id, unix_millis(event_time) FROM raw.partner_uyutdom_order;
