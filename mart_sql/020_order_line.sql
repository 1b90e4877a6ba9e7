-- view: order_line
-- One row per line of every store and partner order, at the order's newest state (from
-- the order_state marts): its first arrival dates the purchase, its newest status decides
-- whether it counts (cancelled and returned orders do not).
-- Partner stores have their own catalogues, so their lines carry a department only:
-- Stroydom sells renovation materials; Uyutdom's lines keep the partner's category name.
WITH store_line AS (
    SELECT customer_id, order_id, ordered_ms, delivery_region, delivery_city, delivery_district, explode(lines) AS line
    FROM mart.order_state
    WHERE status NOT IN ('cancelled', 'returned')
),
partner_line AS (
    SELECT customer_id, partner, partner_order_id, ordered_ms, delivery_region, delivery_city, delivery_district, explode(lines) AS line
    FROM mart.partner_order_state
)
SELECT s.customer_id,
       s.order_id,
       'store' AS source,
       s.ordered_ms,
       s.line['product_id'] AS product_id,
       p.top_category,
       CAST(s.line['quantity'] AS DOUBLE) AS quantity,
       s.line['price_kopecks'] * s.line['quantity'] - s.line['discount_kopecks'] AS amount_kopecks,
       s.delivery_region AS region,
       s.delivery_city AS city,
       s.delivery_district AS district
FROM store_line s
LEFT JOIN product p ON p.product_id = s.line['product_id']
UNION ALL
SELECT customer_id,
       concat(partner, ':', partner_order_id) AS order_id,
       partner AS source,
       ordered_ms,
       concat(partner, ':', line['sku']) AS product_id,
       CASE WHEN partner = 'stroydom' THEN 'Ремонт' ELSE coalesce(line['category'], 'Прочее') END AS top_category,
       CAST(line['quantity'] AS DOUBLE) AS quantity,
       CAST(round(line['price_kopecks'] * line['quantity']) AS BIGINT) AS amount_kopecks,
       delivery_region AS region,
       delivery_city AS city,
       delivery_district AS district
FROM partner_line;
