-- mart: product_region
-- key: product_id, region
-- replace: product_id
-- How many customers of each region bought each product (store orders, cancelled and
-- returned ones not counted): what "popular here" is for a visitor the site knows only by
-- region. A customer's region is the portrait's (the newest delivery address). Counted
-- again for the products of new orders, from `customer_product` (whose purchases are
-- recounted from the orders), so a cancellation takes its buyer back; a customer who
-- moves counts in the new region for a product once it is counted again.
SELECT DISTINCT line['product_id'] AS product_id
FROM (SELECT explode(lines) AS line FROM new_raw.store_order) o;

SELECT cp.product_id,
       p.region,
       CAST(count(*) AS BIGINT) AS buyers
FROM mart.customer_product cp
JOIN changed c ON c.product_id = cp.product_id
JOIN mart.customer_portrait p ON p.customer_id = cp.customer_id
WHERE cp.purchased_qty > 0 AND p.region IS NOT NULL
GROUP BY cp.product_id, p.region;
