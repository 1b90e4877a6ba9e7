-- mart: customer_category
-- key: customer_id, top_category
-- Per customer and department: purchases with recency, and a burst measure — spend in
-- the last 14 days against the customer's own baseline (their spend before that, per 14
-- days of history). "Bought a lot of renovation goods, twice as much in the last two
-- weeks" is burst >= 2 here. Times are relative to the customer's newest event.
SELECT customer_id FROM changed_customer
UNION SELECT l.customer_id
      FROM order_line l JOIN new_raw.store_catalogue c ON c.product_id = l.product_id;

WITH as_of AS (
    SELECT e.customer_id, max(e.ts) AS as_of_ms, min(e.ts) AS first_ms
    FROM customer_event e JOIN changed c ON c.customer_id = e.customer_id
    GROUP BY e.customer_id
),
bought AS (
    SELECT l.customer_id, coalesce(l.top_category, 'Прочее') AS top_category,
           count(DISTINCT l.order_id) AS orders,
           sum(l.amount_kopecks) AS spend_kopecks,
           sum(CASE WHEN l.ordered_ms > a.as_of_ms - 1209600000 THEN l.amount_kopecks ELSE 0 END) AS spend_14d_kopecks,
           sum(CASE WHEN l.ordered_ms <= a.as_of_ms - 1209600000 THEN l.amount_kopecks ELSE 0 END) AS spend_before_kopecks,
           max(l.ordered_ms) AS last_purchase_ms,
           max(a.as_of_ms) AS as_of_ms,
           max(a.first_ms) AS first_ms
    FROM order_line l JOIN as_of a ON a.customer_id = l.customer_id
    GROUP BY l.customer_id, coalesce(l.top_category, 'Прочее')
),
viewed AS (
    SELECT cp.customer_id, coalesce(p.top_category, 'Прочее') AS top_category,
           sum(cp.views) AS views,
           sum(CASE WHEN cp.last_viewed_ms > a.as_of_ms - 1209600000 THEN cp.views ELSE 0 END) AS views_recent
    FROM mart.customer_product cp
    JOIN as_of a ON a.customer_id = cp.customer_id
    LEFT JOIN product p ON p.product_id = cp.product_id
    WHERE cp.views > 0
    GROUP BY cp.customer_id, coalesce(p.top_category, 'Прочее')
),
keys AS (
    SELECT customer_id, top_category FROM bought
    UNION SELECT customer_id, top_category FROM viewed
)
SELECT k.customer_id,
       k.top_category,
       coalesce(b.orders, 0) AS orders,
       coalesce(b.spend_kopecks, 0) AS spend_kopecks,
       coalesce(b.spend_14d_kopecks, 0) AS spend_14d_kopecks,
       b.last_purchase_ms,
       CAST(floor((a.as_of_ms - b.last_purchase_ms) / 86400000.0) AS INT) AS days_since_purchase,
       -- Baseline: spend before the window per 14 days of history before it (at least
       -- one period). No earlier spend means no baseline, so no burst either.
       CASE WHEN coalesce(b.spend_before_kopecks, 0) > 0 THEN
           round(b.spend_14d_kopecks / (b.spend_before_kopecks /
                 greatest((a.as_of_ms - 1209600000 - a.first_ms) / (1209600000.0), 1.0)), 3)
       END AS burst,
       coalesce(v.views, 0) AS views,
       coalesce(v.views_recent, 0) AS views_recent
FROM keys k
JOIN as_of a ON a.customer_id = k.customer_id
LEFT JOIN bought b ON b.customer_id = k.customer_id AND b.top_category = k.top_category
LEFT JOIN viewed v ON v.customer_id = k.customer_id AND v.top_category = k.top_category;
