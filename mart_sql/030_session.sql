-- mart: session
-- key: customer_id, session_id
-- combine: started_ms = least(target.started_ms, source.started_ms)
-- combine: last_event_ms = greatest(target.last_event_ms, source.last_event_ms)
-- combine: traffic_source = greatest(target.traffic_source, source.traffic_source)
-- combine: search_engine = greatest(target.search_engine, source.search_engine)
-- combine: dwell_ms = target.dwell_ms + source.dwell_ms
-- combine: products = CASE WHEN target.products IS NULL THEN source.products WHEN source.products IS NULL THEN target.products ELSE array_sort(array_union(target.products, source.products)) END
-- combine: distinct_products = coalesce(cardinality(CASE WHEN target.products IS NULL THEN source.products WHEN source.products IS NULL THEN target.products ELSE array_union(target.products, source.products) END), 0)
-- combine: searches = target.searches + source.searches
-- combine: carts = target.carts + source.carts
-- One row per site visit: when and how the customer arrived, how long they stayed, how
-- many different products they looked at. The portrait's session behaviour (dwell time,
-- undecided shopping, search-engine vs direct arrivals) is built from these rows.
-- Only the new clickstream rows are read: each fold adds what they say to the visit's
-- row (sums, earliest and latest times, the set of products), so a fold costs what the
-- batch holds, not what the history holds. traffic_source is NULL until the visit's
-- session start has landed.
WITH ev AS (
    SELECT customer_id, session_id, unix_millis(event_time) AS ts, traffic_source, search_engine,
           CAST(NULL AS STRING) AS product_id, CAST(0 AS BIGINT) AS dwell_ms, 0 AS searches, 0 AS carts
    FROM new_raw.site_session_start
    UNION ALL
    SELECT customer_id, session_id, unix_millis(event_time), NULL, NULL, NULL, dwell_ms, 0, 0
    FROM new_raw.site_page_view
    UNION ALL
    SELECT customer_id, session_id, unix_millis(event_time), NULL, NULL, product_id, 0, 0, 0
    FROM new_raw.site_product_view
    UNION ALL
    SELECT customer_id, session_id, unix_millis(event_time), NULL, NULL, NULL, 0, 1, 0
    FROM new_raw.site_search
    UNION ALL
    SELECT customer_id, session_id, unix_millis(event_time), NULL, NULL, product_id, 0, 0, 1
    FROM new_raw.site_cart_add
)
SELECT customer_id,
       session_id,
       min(ts) AS started_ms,
       max(ts) AS last_event_ms,
       max(traffic_source) AS traffic_source,
       max(search_engine) AS search_engine,
       sum(dwell_ms) AS dwell_ms,
       CASE WHEN count(product_id) > 0
            THEN array_sort(array_distinct(array_agg(product_id) FILTER (WHERE product_id IS NOT NULL)))
       END AS products,
       count(DISTINCT product_id) AS distinct_products,
       CAST(sum(searches) AS BIGINT) AS searches,
       CAST(sum(carts) AS BIGINT) AS carts
FROM ev
GROUP BY customer_id, session_id;
