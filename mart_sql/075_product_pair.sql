-- mart: product_pair
-- key: product_id, neighbour_id
-- combine: co_viewers = target.co_viewers + source.co_viewers
-- combine: co_buyers = target.co_buyers + source.co_buyers
-- For every two products, how many customers viewed both (co-view) and bought both
-- (co-purchase). Counted incrementally: `prev_mart.customer_product` is that mart as this
-- one last saw it, so the customers whose viewed or bought products changed since are
-- known, and only the pairs that involve a changed product are counted again, as the
-- difference between after and before. A purchase that is cancelled takes its pairs
-- back. The neighbour lists are ranked from these counts.
-- Only customers with new product views, carts or store orders can have changed rows in
-- `customer_product` since it was last seen (those are all it is built from), so only
-- their rows are compared, not the whole mart.
WITH touched AS (
    SELECT customer_id FROM new_raw.site_product_view
    UNION SELECT customer_id FROM new_raw.site_cart_add
    UNION SELECT customer_id FROM new_raw.store_order
),
now AS (
    SELECT cp.customer_id, cp.product_id, cp.views > 0 AS viewed, cp.purchased_qty > 0 AS bought
    FROM mart.customer_product cp JOIN touched t ON t.customer_id = cp.customer_id
),
was AS (
    SELECT cp.customer_id, cp.product_id, cp.views > 0 AS viewed, cp.purchased_qty > 0 AS bought
    FROM prev_mart.customer_product cp JOIN touched t ON t.customer_id = cp.customer_id
),
state AS (
    SELECT coalesce(n.customer_id, w.customer_id) AS customer_id,
           coalesce(n.product_id, w.product_id) AS product_id,
           coalesce(n.viewed, false) AS viewed,
           coalesce(w.viewed, false) AS was_viewed,
           coalesce(n.bought, false) AS bought,
           coalesce(w.bought, false) AS was_bought
    FROM now n
    FULL OUTER JOIN was w ON w.customer_id = n.customer_id AND w.product_id = n.product_id
),
flipped AS (
    SELECT * FROM state WHERE viewed <> was_viewed OR bought <> was_bought
),
-- Every product of a customer with a change: the other side of the changed pairs.
mine AS (
    SELECT s.*
    FROM state s
    JOIN (SELECT DISTINCT customer_id FROM flipped) f ON f.customer_id = s.customer_id
),
changes AS (
    SELECT a.product_id AS a_id, b.product_id AS b_id,
           (CASE WHEN a.viewed AND b.viewed THEN 1 ELSE 0 END)
             - (CASE WHEN a.was_viewed AND b.was_viewed THEN 1 ELSE 0 END) AS viewers,
           (CASE WHEN a.bought AND b.bought THEN 1 ELSE 0 END)
             - (CASE WHEN a.was_bought AND b.was_bought THEN 1 ELSE 0 END) AS buyers,
           (b.viewed <> b.was_viewed OR b.bought <> b.was_bought) AS both_flipped
    FROM flipped a
    JOIN mine b ON b.customer_id = a.customer_id AND b.product_id <> a.product_id
),
-- Each ordered pair once: from its changed first product, and from its changed second
-- product when the first did not change.
pairs AS (
    SELECT a_id AS product_id, b_id AS neighbour_id, viewers, buyers FROM changes
    UNION ALL
    SELECT b_id, a_id, viewers, buyers FROM changes WHERE NOT both_flipped
)
SELECT product_id,
       neighbour_id,
       CAST(sum(viewers) AS BIGINT) AS co_viewers,
       CAST(sum(buyers) AS BIGINT) AS co_buyers
FROM pairs
GROUP BY product_id, neighbour_id
HAVING sum(viewers) <> 0 OR sum(buyers) <> 0;
