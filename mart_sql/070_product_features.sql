-- mart: product_features
-- key: product_id
-- Per catalogue product: where it sits (department, category, price tier within the
-- category: 1 budget, 2 middle, 3 premium, 0 no price), how popular it is, and whether interest is
-- rising (viewers in the 14 days before its newest view vs the 14 days before those).
SELECT product_id FROM new_raw.site_product_view
UNION SELECT product_id FROM new_raw.site_cart_add
UNION SELECT line['product_id']
      FROM (SELECT explode(lines) AS line FROM new_raw.store_order) o
-- A new price moves every product of its category between tiers.
UNION SELECT p.product_id
      FROM product p JOIN product q ON q.category_id = p.category_id
      JOIN new_raw.store_catalogue c ON c.product_id = q.product_id;

WITH priced AS (
    SELECT product_id, category_id, price_kopecks, coalesce(price_kopecks, 0) > 0 AS has_price
    FROM product
),
tiers AS (
    -- A product without a price has no tier (0), and ranking weighs it as neutral.
    SELECT product_id,
           CAST(CASE WHEN has_price
                     THEN ntile(3) OVER (PARTITION BY category_id, has_price ORDER BY price_kopecks, product_id)
                     ELSE 0 END AS INT) AS price_tier,
           count(*) OVER (PARTITION BY category_id) AS category_size
    FROM priced
),
usage AS (
    SELECT cp.product_id,
           sum(CASE WHEN cp.views > 0 THEN 1 ELSE 0 END) AS viewers,
           sum(cp.views) AS views,
           sum(cp.carts) AS carts,
           sum(CASE WHEN cp.purchased_qty > 0 THEN 1 ELSE 0 END) AS buyers,
           sum(CASE WHEN cp.purchase_orders > 1 THEN 1 ELSE 0 END) AS repeat_buyers,
           sum(cp.purchased_qty) AS purchased_qty,
           max(cp.last_viewed_ms) AS last_viewed_ms
    FROM mart.customer_product cp JOIN changed c ON c.product_id = cp.product_id
    GROUP BY cp.product_id
),
trend AS (
    SELECT cp.product_id,
           sum(CASE WHEN cp.last_viewed_ms > u.last_viewed_ms - 1209600000 THEN 1 ELSE 0 END) AS viewers_recent,
           sum(CASE WHEN cp.last_viewed_ms <= u.last_viewed_ms - 1209600000
                     AND cp.last_viewed_ms > u.last_viewed_ms - 2419200000 THEN 1 ELSE 0 END) AS viewers_before
    FROM mart.customer_product cp JOIN usage u ON u.product_id = cp.product_id
    WHERE cp.views > 0
    GROUP BY cp.product_id
)
SELECT p.product_id,
       p.name,
       p.category_id,
       p.category_name,
       p.top_category,
       p.brand,
       p.price_kopecks,
       p.available,
       t.price_tier,
       t.category_size,
       coalesce(u.viewers, 0) AS viewers,
       coalesce(u.views, 0) AS views,
       coalesce(u.carts, 0) AS carts,
       coalesce(u.buyers, 0) AS buyers,
       coalesce(u.purchased_qty, 0.0) AS purchased_qty,
       round(coalesce(u.buyers, 0) / greatest(CAST(coalesce(u.viewers, 0) AS DOUBLE), 1.0), 4) AS conversion,
       coalesce(u.repeat_buyers, 0) AS repeat_buyers,
       -- Of its buyers, the share who came back for it in another order: what the data
       -- says about replenishment, whatever the rules call the category.
       round(coalesce(u.repeat_buyers, 0) / greatest(CAST(coalesce(u.buyers, 0) AS DOUBLE), 1.0), 4) AS repeat_share,
       coalesce(tr.viewers_recent, 0) AS viewers_recent,
       round((coalesce(tr.viewers_recent, 0) + 1.0) / (coalesce(tr.viewers_before, 0) + 1.0), 3) AS trend
FROM product p
JOIN changed c ON c.product_id = p.product_id
JOIN tiers t ON t.product_id = p.product_id
LEFT JOIN usage u ON u.product_id = p.product_id
LEFT JOIN trend tr ON tr.product_id = p.product_id;
