-- mart: product_neighbour
-- key: product_id, neighbour_id
-- replace: product_id
-- Up to 20 neighbours per product: other products the same customers viewed (co-view)
-- or bought (co-purchase). A customer's new activity changes the counts between every
-- pair of products they touched, so all of their products are recomputed; neighbours
-- that drop out of the top 20 are deleted.
SELECT DISTINCT cp.product_id
FROM mart.customer_product cp
JOIN (SELECT customer_id FROM new_raw.site_product_view
      UNION SELECT customer_id FROM new_raw.site_cart_add
      UNION SELECT customer_id FROM new_raw.store_order) n ON n.customer_id = cp.customer_id;

WITH mine AS (
    SELECT cp.customer_id, cp.product_id, cp.views, cp.purchased_qty
    FROM mart.customer_product cp JOIN changed c ON c.product_id = cp.product_id
),
pairs AS (
    SELECT a.product_id,
           b.product_id AS neighbour_id,
           sum(CASE WHEN a.views > 0 AND b.views > 0 THEN 1 ELSE 0 END) AS co_viewers,
           sum(CASE WHEN a.purchased_qty > 0 AND b.purchased_qty > 0 THEN 1 ELSE 0 END) AS co_buyers
    FROM mine a
    JOIN mart.customer_product b ON b.customer_id = a.customer_id AND b.product_id <> a.product_id
    GROUP BY a.product_id, b.product_id
),
ranked AS (
    SELECT product_id, neighbour_id, co_viewers, co_buyers,
           CAST(row_number() OVER (PARTITION BY product_id ORDER BY co_buyers DESC, co_viewers DESC, neighbour_id) AS INT) AS neighbour_rank
    FROM pairs
    WHERE co_viewers > 0 OR co_buyers > 0
)
SELECT product_id, neighbour_id, co_viewers, co_buyers, neighbour_rank
FROM ranked
WHERE neighbour_rank <= 20;
