-- view: customer_event
-- When each customer was active, as (customer, time): their visits (from the session mart,
-- which already holds the first and last event of every visit, so the clickstream is not
-- read again) and their orders. A customer's portrait is computed as of their newest
-- event, so it depends only on their own history and not on when the mart happened to run.
SELECT customer_id, started_ms AS ts FROM mart.session
UNION ALL SELECT customer_id, last_event_ms FROM mart.session
-- Every version of an order lies between its first arrival and its newest state, so
-- those two stand for all of them.
UNION ALL SELECT customer_id, ordered_ms FROM mart.order_state
UNION ALL SELECT customer_id, unix_millis(newest_time) FROM mart.order_state
UNION ALL SELECT customer_id, ordered_ms FROM mart.partner_order_state
UNION ALL SELECT customer_id, unix_millis(newest_time) FROM mart.partner_order_state;
