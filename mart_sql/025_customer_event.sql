-- view: customer_event
-- Every customer-keyed raw event as (customer, time, table). A customer's portrait is
-- computed as of their newest event, so it depends only on their own history and not on
-- when the mart happened to run.
SELECT customer_id, unix_millis(event_time) AS ts FROM raw.site_session_start
UNION ALL SELECT customer_id, unix_millis(event_time) FROM raw.site_page_view
UNION ALL SELECT customer_id, unix_millis(event_time) FROM raw.site_product_view
UNION ALL SELECT customer_id, unix_millis(event_time) FROM raw.site_search
UNION ALL SELECT customer_id, unix_millis(event_time) FROM raw.site_cart_add
UNION ALL SELECT customer_id, unix_millis(event_time) FROM raw.store_order
UNION ALL SELECT customer_id, unix_millis(event_time) FROM raw.partner_stroydom_order
UNION ALL SELECT customer_id, unix_millis(event_time) FROM raw.partner_uyutdom_order;
