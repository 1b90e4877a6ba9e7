-- view: product
-- The catalogue as it stands now: the newest snapshot of every product. The category path
-- comes root first from the feed, so its first element is the department (`Ремонт`,
-- `Сад`, ...) and its last the leaf category.
SELECT product_id,
       name,
       category_id,
       element_at(category_path, 1) AS top_category,
       element_at(category_path, -1) AS category_name,
       brand,
       price_kopecks,
       available
FROM (
    SELECT c.*,
           row_number() OVER (PARTITION BY product_id ORDER BY event_time DESC, event_id DESC) AS newest
    FROM raw.store_catalogue c
) latest
WHERE newest = 1;
