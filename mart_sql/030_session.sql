-- mart: session
-- key: customer_id, session_id
-- One row per site visit: when and how the customer arrived, how long they stayed, how
-- many different products they looked at. The portrait's session behaviour (dwell time,
-- undecided shopping, search-engine vs direct arrivals) is built from these rows.
SELECT customer_id, session_id FROM new_raw.site_session_start
UNION SELECT customer_id, session_id FROM new_raw.site_page_view
UNION SELECT customer_id, session_id FROM new_raw.site_product_view
UNION SELECT customer_id, session_id FROM new_raw.site_search
UNION SELECT customer_id, session_id FROM new_raw.site_cart_add;

WITH ev AS (
    SELECT customer_id, session_id, unix_millis(event_time) AS ts, traffic_source, search_engine,
           CAST(NULL AS STRING) AS product_id, CAST(0 AS BIGINT) AS dwell_ms, 0 AS searches, 0 AS carts
    FROM raw.site_session_start
    UNION ALL
    SELECT customer_id, session_id, unix_millis(event_time), NULL, NULL, NULL, dwell_ms, 0, 0
    FROM raw.site_page_view
    UNION ALL
    SELECT customer_id, session_id, unix_millis(event_time), NULL, NULL, product_id, 0, 0, 0
    FROM raw.site_product_view
    UNION ALL
    SELECT customer_id, session_id, unix_millis(event_time), NULL, NULL, NULL, 0, 1, 0
    FROM raw.site_search
    UNION ALL
    SELECT customer_id, session_id, unix_millis(event_time), NULL, NULL, product_id, 0, 0, 1
    FROM raw.site_cart_add
)
SELECT ev.customer_id,
       ev.session_id,
       min(ev.ts) AS started_ms,
       max(ev.ts) AS last_event_ms,
       coalesce(max(ev.traffic_source), 'unknown') AS traffic_source,
       max(ev.search_engine) AS search_engine,
       sum(ev.dwell_ms) AS dwell_ms,
       count(DISTINCT ev.product_id) AS distinct_products,
       CAST(sum(ev.searches) AS BIGINT) AS searches,
       CAST(sum(ev.carts) AS BIGINT) AS carts
FROM ev
JOIN changed c ON c.customer_id = ev.customer_id AND c.session_id = ev.session_id
GROUP BY ev.customer_id, ev.session_id;
