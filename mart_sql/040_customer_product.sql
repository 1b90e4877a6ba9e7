-- mart: customer_product
-- key: customer_id, product_id
-- What each customer did with each store product: views and dwell, carts, purchases.
-- Product neighbours, popularity and the interactions' labels are built from these rows.
SELECT customer_id, product_id FROM new_raw.site_product_view
UNION SELECT customer_id, product_id FROM new_raw.site_cart_add
-- Straight from the new order versions: a cancellation removes its lines from order_line.
UNION SELECT customer_id, line['product_id']
      FROM (SELECT customer_id, explode(lines) AS line FROM new_raw.store_order) o;

WITH ev AS (
    SELECT customer_id, product_id, unix_millis(event_time) AS ts, 1 AS views, dwell_ms,
           0 AS carts, CAST(0 AS DOUBLE) AS quantity, CAST(0 AS BIGINT) AS amount_kopecks
    FROM raw.site_product_view
    UNION ALL
    SELECT customer_id, product_id, unix_millis(event_time), 0, 0, 1, 0, 0
    FROM raw.site_cart_add
    UNION ALL
    SELECT customer_id, product_id, ordered_ms, 0, 0, 0, quantity, amount_kopecks
    FROM order_line
    WHERE source = 'store'
)
SELECT ev.customer_id,
       ev.product_id,
       CAST(sum(ev.views) AS BIGINT) AS views,
       sum(ev.dwell_ms) AS view_dwell_ms,
       max(CASE WHEN ev.views > 0 THEN ev.ts END) AS last_viewed_ms,
       CAST(sum(ev.carts) AS BIGINT) AS carts,
       sum(ev.quantity) AS purchased_qty,
       sum(ev.amount_kopecks) AS spend_kopecks,
       max(CASE WHEN ev.quantity > 0 THEN ev.ts END) AS last_purchased_ms,
       min(ev.ts) AS first_seen_ms
FROM ev
JOIN changed c ON c.customer_id = ev.customer_id AND c.product_id = ev.product_id
GROUP BY ev.customer_id, ev.product_id;
