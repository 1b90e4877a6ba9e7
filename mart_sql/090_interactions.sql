-- mart: interactions
-- key: customer_id, list_id, product_id
-- The training data: one row per product shown in a recommendation list. Label 1 when
-- the customer reacted within 7 days of first seeing it (clicked it in that list, or put
-- it in the cart, or bought it); 0 when it was shown and ignored. Products never shown
-- produce no row: they are unknown to us, never negatives. `propensity` (1 for the
-- ranker's own top, less for an exploration slot) lets training weigh rows by its inverse.
SELECT customer_id FROM new_raw.site_rec_impression
UNION SELECT customer_id FROM new_raw.site_rec_click
UNION SELECT customer_id FROM new_raw.site_cart_add
UNION SELECT customer_id FROM new_raw.store_order;

WITH shown AS (
    SELECT i.customer_id, i.list_id, i.product_id,
           min(unix_millis(i.event_time)) AS shown_ms,
           min(i.position) AS position,
           max(i.placement) AS placement,
           max(i.model_version) AS model_version,
           -- How likely the list's policy was to show it (exploration slots: below 1);
           -- impressions from before propensities were logged were the ranker's own top.
           min(coalesce(i.propensity, 1.0)) AS propensity
    FROM raw.site_rec_impression i JOIN changed c ON c.customer_id = i.customer_id
    GROUP BY i.customer_id, i.list_id, i.product_id
),
clicks AS (
    SELECT k.customer_id, k.list_id, k.product_id, min(unix_millis(k.event_time)) AS clicked_ms
    FROM raw.site_rec_click k JOIN changed c ON c.customer_id = k.customer_id
    GROUP BY k.customer_id, k.list_id, k.product_id
),
later AS (
    SELECT a.customer_id, a.product_id, unix_millis(a.event_time) AS ts, 'cart' AS kind
    FROM raw.site_cart_add a JOIN changed c ON c.customer_id = a.customer_id
    UNION ALL
    SELECT l.customer_id, l.product_id, l.ordered_ms, 'purchase'
    FROM order_line l JOIN changed c ON c.customer_id = l.customer_id
    WHERE l.source = 'store'
),
reactions AS (
    SELECT s.customer_id, s.list_id, s.product_id,
           max(CASE WHEN l.kind = 'cart' THEN 1 ELSE 0 END) AS carted,
           max(CASE WHEN l.kind = 'purchase' THEN 1 ELSE 0 END) AS purchased
    FROM shown s
    JOIN later l ON l.customer_id = s.customer_id AND l.product_id = s.product_id
    WHERE l.ts >= s.shown_ms AND l.ts <= s.shown_ms + 604800000
    GROUP BY s.customer_id, s.list_id, s.product_id
)
SELECT s.customer_id,
       s.list_id,
       s.product_id,
       s.shown_ms,
       s.position,
       s.placement,
       s.model_version,
       s.propensity,
       coalesce(k.clicked_ms IS NOT NULL AND k.clicked_ms <= s.shown_ms + 604800000, false) AS clicked,
       coalesce(r.carted = 1, false) AS carted,
       coalesce(r.purchased = 1, false) AS purchased,
       CASE WHEN (k.clicked_ms IS NOT NULL AND k.clicked_ms <= s.shown_ms + 604800000)
                 OR coalesce(r.carted, 0) = 1 OR coalesce(r.purchased, 0) = 1 THEN 1 ELSE 0 END AS label
FROM shown s
LEFT JOIN clicks k ON k.customer_id = s.customer_id AND k.list_id = s.list_id AND k.product_id = s.product_id
LEFT JOIN reactions r ON r.customer_id = s.customer_id AND r.list_id = s.list_id AND r.product_id = s.product_id;
