-- mart: order_state
-- key: order_id
-- combine: ordered_ms = least(target.ordered_ms, source.ordered_ms)
-- combine: newest_time = greatest(target.newest_time, source.newest_time)
-- combine: newest_event_id = CASE WHEN source.newest_time > target.newest_time OR (source.newest_time = target.newest_time AND source.newest_event_id > target.newest_event_id) THEN source.newest_event_id ELSE target.newest_event_id END
-- combine: customer_id = CASE WHEN source.newest_time > target.newest_time OR (source.newest_time = target.newest_time AND source.newest_event_id > target.newest_event_id) THEN source.customer_id ELSE target.customer_id END
-- combine: status = CASE WHEN source.newest_time > target.newest_time OR (source.newest_time = target.newest_time AND source.newest_event_id > target.newest_event_id) THEN source.status ELSE target.status END
-- combine: lines = CASE WHEN source.newest_time > target.newest_time OR (source.newest_time = target.newest_time AND source.newest_event_id > target.newest_event_id) THEN source.lines ELSE target.lines END
-- combine: delivery_region = CASE WHEN source.newest_time > target.newest_time OR (source.newest_time = target.newest_time AND source.newest_event_id > target.newest_event_id) THEN source.delivery_region ELSE target.delivery_region END
-- combine: delivery_city = CASE WHEN source.newest_time > target.newest_time OR (source.newest_time = target.newest_time AND source.newest_event_id > target.newest_event_id) THEN source.delivery_city ELSE target.delivery_city END
-- combine: delivery_district = CASE WHEN source.newest_time > target.newest_time OR (source.newest_time = target.newest_time AND source.newest_event_id > target.newest_event_id) THEN source.delivery_district ELSE target.delivery_district END
-- Every store order at its newest state. An order arrives again on every status change:
-- its first arrival dates the purchase (ordered_ms), its newest version (by event time,
-- then event id) carries the status and lines that count. Both are order-independent
-- (earliest, and newest by a total order), so only the new versions are read and each
-- fold keeps whichever of the stored and the new state is newer; `order_line` and
-- `customer_event` read this instead of every version of every order.
SELECT order_id,
       customer_id,
       status,
       lines,
       -- Of the delivery address only where it is: street, house, flat, postal code and
       -- coordinates never reach a mart (the portrait needs the district at most).
       delivery_address['region'] AS delivery_region,
       delivery_address['city'] AS delivery_city,
       delivery_address['district'] AS delivery_district,
       ordered_ms,
       event_time AS newest_time,
       event_id AS newest_event_id
FROM (
    SELECT o.*,
           min(unix_millis(event_time)) OVER (PARTITION BY order_id) AS ordered_ms,
           row_number() OVER (PARTITION BY order_id ORDER BY event_time DESC, event_id DESC) AS newest
    FROM new_raw.store_order o
) v
WHERE newest = 1;
