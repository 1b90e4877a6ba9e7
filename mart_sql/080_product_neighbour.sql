-- mart: product_neighbour
-- key: product_id, neighbour_id
-- replace: product_id
-- Up to 20 neighbours per product: other products the same customers bought (co-purchase)
-- or viewed (co-view), from the pair counts. A customer's new activity changes the counts
-- between the products they touched, so those products are ranked again; neighbours that
-- drop out of the top 20 are deleted.
SELECT DISTINCT cp.product_id
FROM mart.customer_product cp
JOIN (SELECT customer_id FROM new_raw.site_product_view
      UNION SELECT customer_id FROM new_raw.site_cart_add
      UNION SELECT customer_id FROM new_raw.store_order) n ON n.customer_id = cp.customer_id;

WITH ranked AS (
    SELECT p.product_id, p.neighbour_id, p.co_viewers, p.co_buyers,
           CAST(row_number() OVER (PARTITION BY p.product_id ORDER BY p.co_buyers DESC, p.co_viewers DESC, p.neighbour_id) AS INT) AS neighbour_rank
    FROM mart.product_pair p
    JOIN changed c ON c.product_id = p.product_id
    WHERE p.co_viewers > 0 OR p.co_buyers > 0
)
SELECT product_id, neighbour_id, co_viewers, co_buyers, neighbour_rank
FROM ranked
WHERE neighbour_rank <= 20;
