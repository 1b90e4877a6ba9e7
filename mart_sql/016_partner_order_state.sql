-- mart: partner_order_state
-- key: partner, partner_order_id
-- combine: ordered_ms = least(target.ordered_ms, source.ordered_ms)
-- combine: newest_time = greatest(target.newest_time, source.newest_time)
-- combine: newest_event_id = CASE WHEN source.newest_time > target.newest_time OR (source.newest_time = target.newest_time AND source.newest_event_id > target.newest_event_id) THEN source.newest_event_id ELSE target.newest_event_id END
-- combine: customer_id = CASE WHEN source.newest_time > target.newest_time OR (source.newest_time = target.newest_time AND source.newest_event_id > target.newest_event_id) THEN source.customer_id ELSE target.customer_id END
-- combine: lines = CASE WHEN source.newest_time > target.newest_time OR (source.newest_time = target.newest_time AND source.newest_event_id > target.newest_event_id) THEN source.lines ELSE target.lines END
-- combine: delivery_region = CASE WHEN source.newest_time > target.newest_time OR (source.newest_time = target.newest_time AND source.newest_event_id > target.newest_event_id) THEN source.delivery_region ELSE target.delivery_region END
-- combine: delivery_city = CASE WHEN source.newest_time > target.newest_time OR (source.newest_time = target.newest_time AND source.newest_event_id > target.newest_event_id) THEN source.delivery_city ELSE target.delivery_city END
-- combine: delivery_district = CASE WHEN source.newest_time > target.newest_time OR (source.newest_time = target.newest_time AND source.newest_event_id > target.newest_event_id) THEN source.delivery_district ELSE target.delivery_district END
-- Every partner-store order at its newest state, as `order_state` keeps the store's:
-- the first arrival dates it, the newest version's lines count.
WITH partner AS (
    SELECT customer_id, partner, partner_order_id, lines, delivery_address, event_time, event_id
    FROM new_raw.partner_stroydom_order
    UNION ALL
    SELECT customer_id, partner, partner_order_id, lines, delivery_address, event_time, event_id
    FROM new_raw.partner_uyutdom_order
)
SELECT partner,
       partner_order_id,
       customer_id,
       lines,
       -- Where only, as `order_state` keeps it: no street, house, flat or coordinates.
       delivery_address['region'] AS delivery_region,
       delivery_address['city'] AS delivery_city,
       delivery_address['district'] AS delivery_district,
       ordered_ms,
       event_time AS newest_time,
       event_id AS newest_event_id
FROM (
    SELECT p.*,
           min(unix_millis(event_time)) OVER (PARTITION BY partner, partner_order_id) AS ordered_ms,
           row_number() OVER (PARTITION BY partner, partner_order_id ORDER BY event_time DESC, event_id DESC) AS newest
    FROM partner p
) v
WHERE newest = 1;
