-- mart: customer_product
-- key: customer_id, product_id
-- combine: views = target.views + source.views
-- combine: view_dwell_ms = target.view_dwell_ms + source.view_dwell_ms
-- combine: last_viewed_ms = greatest(target.last_viewed_ms, source.last_viewed_ms)
-- combine: carts = target.carts + source.carts
-- combine: first_clicked_ms = least(target.first_clicked_ms, source.first_clicked_ms)
-- combine: first_seen_ms = least(target.first_clicked_ms, source.first_clicked_ms, source.first_bought_ms)
-- What each customer did with each store product: views and dwell, carts, purchases.
-- Product neighbours, popularity and the interactions' labels are built from these rows.
-- Views and carts come from the new clickstream rows only and are added to the row;
-- purchases are recounted from the orders for every row the fold touches, because an
-- order can still be cancelled or returned (orders are few next to the clickstream).
WITH ev AS (
    SELECT customer_id, product_id, unix_millis(event_time) AS ts, 1 AS views, dwell_ms, 0 AS carts
    FROM new_raw.site_product_view
    UNION ALL
    SELECT customer_id, product_id, unix_millis(event_time), 0, 0, 1
    FROM new_raw.site_cart_add
),
clicks AS (
    SELECT customer_id, product_id,
           CAST(sum(views) AS BIGINT) AS views,
           sum(dwell_ms) AS view_dwell_ms,
           max(CASE WHEN views > 0 THEN ts END) AS last_viewed_ms,
           CAST(sum(carts) AS BIGINT) AS carts,
           min(ts) AS first_clicked_ms
    FROM ev
    GROUP BY customer_id, product_id
),
-- Straight from the new order versions: a cancellation removes its lines from order_line.
ordered AS (
    SELECT DISTINCT customer_id, line['product_id'] AS product_id
    FROM (SELECT customer_id, explode(lines) AS line FROM new_raw.store_order) o
),
keys AS (
    SELECT customer_id, product_id FROM clicks
    UNION SELECT customer_id, product_id FROM ordered
),
bought AS (
    SELECT l.customer_id, l.product_id,
           sum(l.quantity) AS purchased_qty,
           -- How many orders it was in: a second order is a rebuy, a second unit is not.
           CAST(count(DISTINCT CASE WHEN l.quantity > 0 THEN l.order_id END) AS BIGINT) AS purchase_orders,
           sum(l.amount_kopecks) AS spend_kopecks,
           max(CASE WHEN l.quantity > 0 THEN l.ordered_ms END) AS last_purchased_ms,
           min(l.ordered_ms) AS first_bought_ms
    FROM order_line l
    JOIN keys k ON k.customer_id = l.customer_id AND k.product_id = l.product_id
    WHERE l.source = 'store'
    GROUP BY l.customer_id, l.product_id
)
SELECT k.customer_id,
       k.product_id,
       coalesce(c.views, CAST(0 AS BIGINT)) AS views,
       coalesce(c.view_dwell_ms, CAST(0 AS BIGINT)) AS view_dwell_ms,
       c.last_viewed_ms,
       coalesce(c.carts, CAST(0 AS BIGINT)) AS carts,
       coalesce(b.purchased_qty, 0.0) AS purchased_qty,
       coalesce(b.purchase_orders, CAST(0 AS BIGINT)) AS purchase_orders,
       coalesce(b.spend_kopecks, CAST(0 AS BIGINT)) AS spend_kopecks,
       b.last_purchased_ms,
       c.first_clicked_ms,
       b.first_bought_ms,
       least(c.first_clicked_ms, b.first_bought_ms) AS first_seen_ms
FROM keys k
LEFT JOIN clicks c ON c.customer_id = k.customer_id AND c.product_id = k.product_id
LEFT JOIN bought b ON b.customer_id = k.customer_id AND b.product_id = k.product_id;
