-- mart: customer_portrait
-- key: customer_id
-- Everything known about a customer in one row, as of their newest event. Each block
-- below is one kind of evidence; the recommender's rules and features read these columns.
SELECT customer_id FROM changed_customer
UNION SELECT l.customer_id
      FROM order_line l JOIN new_raw.district_price_index d ON d.district = l.district
UNION SELECT cp.customer_id
      FROM mart.customer_product cp JOIN new_raw.store_catalogue c ON c.product_id = cp.product_id;

WITH as_of AS (
    SELECT e.customer_id, max(e.ts) AS as_of_ms
    FROM customer_event e JOIN changed c ON c.customer_id = e.customer_id
    GROUP BY e.customer_id
),
-- Session behaviour: long visits over many products without a clear favourite are the
-- "undecided shopper"; arrivals from search engines vs typed-in (direct) show loyalty.
visits AS (
    SELECT s.customer_id,
           count(*) AS sessions,
           round(avg(s.dwell_ms) / 60000.0, 2) AS avg_session_minutes,
           round(avg(CAST(s.distinct_products AS DOUBLE)), 2) AS avg_products_per_session,
           sum(CASE WHEN s.distinct_products >= 8 THEN 1 ELSE 0 END) AS undecided_sessions,
           round(avg(CASE WHEN s.traffic_source = 'search' THEN 1.0 ELSE 0.0 END), 3) AS search_share,
           round(avg(CASE WHEN s.traffic_source = 'direct' THEN 1.0 ELSE 0.0 END), 3) AS direct_share
    FROM mart.session s JOIN changed c ON c.customer_id = s.customer_id
    GROUP BY s.customer_id
),
brand_views AS (
    SELECT cp.customer_id, p.brand, sum(cp.views) AS views
    FROM mart.customer_product cp
    JOIN changed c ON c.customer_id = cp.customer_id
    JOIN product p ON p.product_id = cp.product_id
    WHERE p.brand IS NOT NULL AND cp.views > 0
    GROUP BY cp.customer_id, p.brand
),
brands AS (
    SELECT customer_id, round(max(views) / CAST(sum(views) AS DOUBLE), 3) AS top_brand_share, sum(views) AS branded_views
    FROM brand_views
    GROUP BY customer_id
),
spend AS (
    SELECT l.customer_id,
           count(DISTINCT l.order_id) AS orders,
           sum(l.amount_kopecks) AS spend_kopecks,
           sum(CASE WHEN l.ordered_ms > a.as_of_ms - 7776000000 THEN l.amount_kopecks ELSE 0 END) AS spend_90d_kopecks
    FROM order_line l JOIN as_of a ON a.customer_id = l.customer_id
    GROUP BY l.customer_id
),
departments AS (
    SELECT cc.customer_id,
           sum(CASE WHEN cc.top_category = 'Ремонт' THEN cc.spend_kopecks ELSE 0 END) AS renovation_spend_kopecks,
           sum(CASE WHEN cc.top_category = 'Ремонт' THEN cc.spend_14d_kopecks ELSE 0 END) AS renovation_spend_14d_kopecks,
           max(CASE WHEN cc.top_category = 'Ремонт' THEN cc.burst END) AS renovation_burst,
           max(CASE WHEN cc.top_category = 'Обои' AND cc.orders > 0 THEN 1 ELSE 0 END) AS bought_wallpaper,
           min(CASE WHEN cc.top_category IN ('Ремонт', 'Обои') THEN cc.days_since_purchase END) AS days_since_renovation_purchase,
           min(CASE WHEN cc.top_category IN ('Мебель', 'Ванная') THEN cc.days_since_purchase END) AS days_since_furnishing_purchase,
           min(CASE WHEN cc.top_category IN ('Текстиль', 'Освещение', 'Декор') THEN cc.days_since_purchase END) AS days_since_decor_purchase,
           min(CASE WHEN cc.top_category = 'Сад' THEN cc.days_since_purchase END) AS days_since_garden_purchase
    FROM mart.customer_category cc JOIN changed c ON c.customer_id = cc.customer_id
    GROUP BY cc.customer_id
),
-- Where they live: the newest delivery address that names a district, and that
-- district's newest price per square metre (the wealth signal).
address AS (
    SELECT customer_id, region, city, district
    FROM (
        SELECT l.customer_id, l.region, l.city, l.district,
               row_number() OVER (PARTITION BY l.customer_id ORDER BY l.ordered_ms DESC, l.order_id DESC) AS newest
        FROM order_line l JOIN changed c ON c.customer_id = l.customer_id
        WHERE l.district IS NOT NULL
    ) a
    WHERE newest = 1
),
district_price AS (
    SELECT district, price_per_sq_m_kopecks
    FROM (
        SELECT district, price_per_sq_m_kopecks,
               row_number() OVER (PARTITION BY district ORDER BY period_start DESC, event_time DESC, event_id DESC) AS newest
        FROM raw.district_price_index
    ) d
    WHERE newest = 1
),
-- The home: the newest register record of a right registered to the customer.
home AS (
    SELECT customer_id, market, object_type, area_sq_m, cadastral_value_kopecks, amenities,
           unix_millis(CAST(right_registration_date AS TIMESTAMP)) AS registered_ms
    FROM (
        SELECT r.*,
               row_number() OVER (PARTITION BY r.customer_id ORDER BY r.right_registration_date DESC, r.event_time DESC, r.event_id DESC) AS newest
        FROM raw.register_real_estate r JOIN changed c ON c.customer_id = r.customer_id
    ) h
    WHERE newest = 1
),
social AS (
    SELECT customer_id, sex, birth_year, interests
    FROM (
        SELECT s.customer_id, s.sex, s.birth_year, s.interests,
               row_number() OVER (PARTITION BY s.customer_id ORDER BY s.event_time DESC, s.event_id DESC) AS newest
        FROM (
            SELECT customer_id, sex, birth_year, interests, deactivated, event_time, event_id FROM raw.vk_profile
            UNION ALL
            SELECT customer_id, sex, birth_year, interests, deactivated, event_time, event_id FROM raw.instagram_profile
        ) s
        JOIN changed c ON c.customer_id = s.customer_id
        WHERE s.deactivated IS NULL
    ) p
    WHERE newest = 1
),
consent AS (
    SELECT customer_id, action
    FROM (
        SELECT k.customer_id, k.action,
               row_number() OVER (PARTITION BY k.customer_id ORDER BY k.event_time DESC, k.event_id DESC) AS newest
        FROM raw.site_consent k JOIN changed c ON c.customer_id = k.customer_id
        WHERE k.purpose = 'social_profile'
    ) k
    WHERE newest = 1
),
joined AS (
    SELECT a.customer_id,
           a.as_of_ms,
           s.sex,
           CAST(floor(a.as_of_ms / 31557600000.0) AS INT) + 1970 - s.birth_year AS age,
           s.interests,
           coalesce(v.sessions, 0) AS sessions,
           v.avg_session_minutes,
           v.avg_products_per_session,
           coalesce(v.undecided_sessions, 0) AS undecided_sessions,
           v.search_share,
           v.direct_share,
           b.top_brand_share,
           coalesce(b.branded_views, 0) AS branded_views,
           coalesce(sp.orders, 0) AS orders,
           coalesce(sp.spend_kopecks, 0) AS spend_kopecks,
           coalesce(sp.spend_90d_kopecks, 0) AS spend_90d_kopecks,
           d.renovation_spend_kopecks,
           d.renovation_spend_14d_kopecks,
           d.renovation_burst,
           d.bought_wallpaper,
           d.days_since_renovation_purchase,
           d.days_since_furnishing_purchase,
           d.days_since_decor_purchase,
           d.days_since_garden_purchase,
           ad.region,
           ad.city,
           ad.district,
           dp.price_per_sq_m_kopecks AS district_price_per_sq_m_kopecks,
           h.market,
           h.object_type,
           h.area_sq_m,
           h.cadastral_value_kopecks,
           h.amenities,
           CAST(floor((a.as_of_ms - h.registered_ms) / 86400000.0) AS INT) AS days_since_registration,
           k.action AS social_consent
    FROM as_of a
    LEFT JOIN visits v ON v.customer_id = a.customer_id
    LEFT JOIN brands b ON b.customer_id = a.customer_id
    LEFT JOIN spend sp ON sp.customer_id = a.customer_id
    LEFT JOIN departments d ON d.customer_id = a.customer_id
    LEFT JOIN address ad ON ad.customer_id = a.customer_id
    LEFT JOIN district_price dp ON dp.district = ad.district
    LEFT JOIN home h ON h.customer_id = a.customer_id
    LEFT JOIN social s ON s.customer_id = a.customer_id
    LEFT JOIN consent k ON k.customer_id = a.customer_id
)
SELECT customer_id,
       as_of_ms,
       -- Who: sex and age band as the social profile states them.
       coalesce(sex, 'unknown') AS sex,
       CASE WHEN age IS NULL THEN 'unknown'
            WHEN age < 25 THEN '18-24' WHEN age < 35 THEN '25-34' WHEN age < 45 THEN '35-44'
            WHEN age < 55 THEN '45-54' ELSE '55+' END AS age_band,
       -- How they shop.
       sessions,
       avg_session_minutes,
       avg_products_per_session,
       undecided_sessions,
       coalesce(avg_products_per_session >= 8, false) AS undecided_shopper,
       search_share,
       direct_share,
       top_brand_share,
       coalesce(top_brand_share >= 0.6 AND branded_views >= 5, false) AS brand_loyal,
       -- What they buy and how much.
       orders,
       spend_kopecks,
       spend_90d_kopecks,
       CASE WHEN orders = 0 THEN 'none'
            WHEN spend_kopecks >= 3000000 * orders THEN 'high'
            WHEN spend_kopecks >= 1000000 * orders THEN 'mid' ELSE 'low' END AS spend_tier,
       coalesce(renovation_spend_kopecks, 0) AS renovation_spend_kopecks,
       coalesce(renovation_spend_14d_kopecks, 0) AS renovation_spend_14d_kopecks,
       renovation_burst,
       coalesce(renovation_burst >= 2.0, false) AS renovation_burst_flag,
       -- Materials, not only wallpaper and decor, mean a full renovation.
       CASE WHEN coalesce(renovation_spend_kopecks, 0) > 0 THEN 'full'
            WHEN coalesce(bought_wallpaper, 0) = 1 THEN 'cosmetic'
            ELSE 'none' END AS renovation_scope,
       -- Where and how they live.
       region,
       city,
       district,
       district_price_per_sq_m_kopecks,
       CASE WHEN district_price_per_sq_m_kopecks IS NULL THEN 'unknown'
            WHEN district_price_per_sq_m_kopecks >= 40000000 THEN 'high'
            WHEN district_price_per_sq_m_kopecks >= 20000000 THEN 'mid' ELSE 'low' END AS wealth_tier,
       coalesce(market, 'unknown') AS housing_market,
       object_type,
       area_sq_m,
       cadastral_value_kopecks,
       days_since_registration,
       coalesce(days_since_registration BETWEEN 0 AND 180, false) AS new_homeowner,
       CASE WHEN amenities IS NULL THEN NULL ELSE array_join(amenities, ',') END AS amenities,
       coalesce(array_contains(amenities, 'sauna'), false) AS has_sauna,
       coalesce(array_contains(amenities, 'pool'), false) AS has_pool,
       CASE WHEN interests IS NULL THEN NULL ELSE array_join(interests, ',') END AS social_interests,
       coalesce(social_consent = 'given', false) AS social_consent,
       -- Where they are in settling in: the newest kind of purchase within 90 days.
       CASE WHEN coalesce(days_since_renovation_purchase, 9999) <= 90
                 OR coalesce(days_since_registration BETWEEN 0 AND 90, false) THEN 'renovating'
            WHEN coalesce(days_since_furnishing_purchase, 9999) <= 90 THEN 'furnishing'
            WHEN coalesce(days_since_decor_purchase, 9999) <= 90
                 OR coalesce(days_since_garden_purchase, 9999) <= 90 THEN 'decorating'
            ELSE 'settled' END AS lifecycle_stage
FROM joined;
