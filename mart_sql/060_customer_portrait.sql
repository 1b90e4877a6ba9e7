-- mart: customer_portrait
-- key: customer_id
-- Everything known about a customer in one row, as of their newest event. Each block
-- below is one kind of evidence; the recommender's rules and features read these columns.
-- Every inferred attribute has a `<attribute>_because` column: the rule that decided it
-- and the raw rows it read (event ids, session ids, amounts), which `hoffrec explain`
-- shows. The rules are documented in mart_sql/README.md.
SELECT customer_id FROM changed_customer
UNION SELECT l.customer_id
      FROM order_line l JOIN new_raw.district_price_index d ON d.district = l.district
UNION SELECT r.customer_id
      FROM raw.register_real_estate r JOIN new_raw.district_price_index d ON d.district = r.district
UNION SELECT cp.customer_id
      FROM mart.customer_product cp JOIN new_raw.store_catalogue c ON c.product_id = cp.product_id;

WITH as_of AS (
    SELECT e.customer_id, max(e.ts) AS as_of_ms
    FROM customer_event e JOIN changed c ON c.customer_id = e.customer_id
    GROUP BY e.customer_id
),
-- Session behaviour: arrivals from search engines vs typed-in (direct) show loyalty.
visits AS (
    SELECT s.customer_id,
           count(*) AS sessions,
           round(avg(s.dwell_ms) / 60000.0, 2) AS avg_session_minutes,
           round(avg(CAST(s.distinct_products AS DOUBLE)), 2) AS avg_products_per_session,
           round(avg(CASE WHEN s.traffic_source = 'search' THEN 1.0 ELSE 0.0 END), 3) AS search_share,
           round(avg(CASE WHEN s.traffic_source = 'direct' THEN 1.0 ELSE 0.0 END), 3) AS direct_share,
           sum(CASE WHEN s.traffic_source = 'search' THEN 1 ELSE 0 END) AS search_sessions
    FROM mart.session s JOIN changed c ON c.customer_id = s.customer_id
    GROUP BY s.customer_id
),
-- Undecided: a visit of 30 minutes or more over at least 5 different products of one
-- department (the worked customer: 50 minutes over swings and their accessories).
long_visit_product AS (
    SELECT s.customer_id, s.session_id, s.dwell_ms, explode(s.products) AS product_id
    FROM mart.session s JOIN changed c ON c.customer_id = s.customer_id
    WHERE s.dwell_ms >= 1800000 AND s.distinct_products >= 5
),
long_visit AS (
    SELECT v.customer_id, v.session_id, max(v.dwell_ms) AS dwell_ms, p.top_category,
           count(DISTINCT v.product_id) AS products
    FROM long_visit_product v JOIN product p ON p.product_id = v.product_id
    GROUP BY v.customer_id, v.session_id, p.top_category
    HAVING count(DISTINCT v.product_id) >= 5
),
undecided AS (
    SELECT customer_id, session_id, dwell_ms, top_category, products, undecided_sessions
    FROM (
        SELECT l.*,
               row_number() OVER (PARTITION BY customer_id ORDER BY products DESC, dwell_ms DESC, session_id, top_category) AS r,
               count(*) OVER (PARTITION BY customer_id) AS undecided_sessions
        FROM long_visit l
    ) u
    WHERE r = 1
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
    SELECT customer_id, brand AS top_brand, views AS top_brand_views, branded_views,
           round(views / CAST(branded_views AS DOUBLE), 3) AS top_brand_share
    FROM (
        SELECT b.*,
               row_number() OVER (PARTITION BY customer_id ORDER BY views DESC, brand) AS r,
               sum(views) OVER (PARTITION BY customer_id) AS branded_views
        FROM brand_views b
    ) b
    WHERE r = 1
),
spend AS (
    SELECT l.customer_id,
           count(DISTINCT l.order_id) AS orders,
           sum(l.amount_kopecks) AS spend_kopecks,
           sum(CASE WHEN l.ordered_ms > a.as_of_ms - 7776000000 THEN l.amount_kopecks ELSE 0 END) AS spend_90d_kopecks,
           count(*) AS order_lines,
           sum(l.quantity) AS units
    FROM order_line l JOIN as_of a ON a.customer_id = l.customer_id
    GROUP BY l.customer_id
),
departments AS (
    SELECT cc.customer_id,
           sum(CASE WHEN cc.top_category = 'Ремонт' THEN cc.spend_kopecks ELSE 0 END) AS renovation_spend_kopecks,
           sum(CASE WHEN cc.top_category = 'Ремонт' THEN cc.spend_14d_kopecks ELSE 0 END) AS renovation_spend_14d_kopecks,
           sum(CASE WHEN cc.top_category = 'Ремонт' THEN cc.orders ELSE 0 END) AS renovation_orders,
           max(CASE WHEN cc.top_category = 'Ремонт' THEN cc.burst END) AS renovation_burst,
           max(CASE WHEN cc.top_category = 'Обои' AND cc.orders > 0 THEN 1 ELSE 0 END) AS bought_wallpaper,
           min(CASE WHEN cc.top_category = 'Ремонт' THEN cc.days_since_purchase END) AS days_since_renovation_purchase,
           min(CASE WHEN cc.top_category IN ('Мебель', 'Ванная') THEN cc.days_since_purchase END) AS days_since_furnishing_purchase,
           min(CASE WHEN cc.top_category IN ('Текстиль', 'Освещение', 'Декор', 'Обои') THEN cc.days_since_purchase END) AS days_since_decor_purchase,
           min(CASE WHEN cc.top_category = 'Сад' THEN cc.days_since_purchase END) AS days_since_garden_purchase
    FROM mart.customer_category cc JOIN changed c ON c.customer_id = cc.customer_id
    GROUP BY cc.customer_id
),
-- Where they live: the newest delivery address that names a district.
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
-- The newest price per square metre of every district and market segment ('unknown' is
-- the index over all segments).
district_price AS (
    SELECT district, market, price_per_sq_m_kopecks, event_id
    FROM (
        SELECT district, market, price_per_sq_m_kopecks, event_id,
               row_number() OVER (PARTITION BY district, market ORDER BY period_start DESC, event_time DESC, event_id DESC) AS newest
        FROM raw.district_price_index
    ) d
    WHERE newest = 1
),
-- The home: the newest register record of a right registered to the customer. The
-- register does not say new build or resale: a home whose right was first registered
-- within two years of its completion was bought new; years later, on the secondary market.
home AS (
    SELECT customer_id, event_id, market AS stated_market, object_type, district, area_sq_m,
           cadastral_value_kopecks, amenities, build_year, right_registration_date,
           unix_millis(CAST(right_registration_date AS TIMESTAMP)) AS registered_ms,
           CAST(extract(YEAR FROM right_registration_date) AS INT) - build_year AS years_built_before
    FROM (
        SELECT r.*,
               row_number() OVER (PARTITION BY r.customer_id ORDER BY r.right_registration_date DESC, r.event_time DESC, r.event_id DESC) AS newest
        FROM raw.register_real_estate r JOIN changed c ON c.customer_id = r.customer_id
    ) h
    WHERE newest = 1
),
home_market AS (
    SELECT h.*,
           CASE WHEN h.stated_market IN ('new_build', 'secondary') THEN h.stated_market
                WHEN h.object_type NOT IN ('house', 'flat') OR h.build_year IS NULL THEN 'unknown'
                WHEN h.years_built_before <= 2 THEN 'new_build'
                ELSE 'secondary' END AS market,
           CASE WHEN h.area_sq_m > 0 THEN CAST(round(h.cadastral_value_kopecks / h.area_sq_m) AS BIGINT) END AS cadastral_per_sq_m_kopecks
    FROM home h
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
-- Each purpose's newest decision. The raw tables a purpose governs reach this SQL gated
-- already (`consent_purpose` in topics/, src/mart/consent.rs): after a withdrawal the
-- social and register blocks above find nothing of the customer's.
consent AS (
    SELECT customer_id,
           array_join(array_sort(array_agg(purpose) FILTER (WHERE action = 'given')), ',') AS consents,
           array_join(array_sort(array_agg(concat(purpose, ' ', action, ' in ', event_id))), '; ') AS consents_because
    FROM (
        SELECT k.customer_id, k.purpose, k.action, k.event_id,
               row_number() OVER (PARTITION BY k.customer_id, k.purpose ORDER BY k.event_time DESC, k.event_id DESC) AS newest
        FROM raw.site_consent k JOIN changed c ON c.customer_id = k.customer_id
    ) k
    WHERE newest = 1
    GROUP BY customer_id
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
           v.search_share,
           v.direct_share,
           v.search_sessions,
           coalesce(u.undecided_sessions, 0) AS undecided_sessions,
           u.session_id AS undecided_session_id,
           u.dwell_ms AS undecided_dwell_ms,
           u.top_category AS undecided_department,
           u.products AS undecided_products,
           b.top_brand,
           b.top_brand_views,
           b.top_brand_share,
           coalesce(b.branded_views, 0) AS branded_views,
           coalesce(sp.orders, 0) AS orders,
           coalesce(sp.spend_kopecks, 0) AS spend_kopecks,
           coalesce(sp.spend_90d_kopecks, 0) AS spend_90d_kopecks,
           sp.order_lines,
           sp.units,
           d.renovation_spend_kopecks,
           d.renovation_spend_14d_kopecks,
           d.renovation_orders,
           d.renovation_burst,
           d.bought_wallpaper,
           d.days_since_renovation_purchase,
           d.days_since_furnishing_purchase,
           d.days_since_decor_purchase,
           d.days_since_garden_purchase,
           ad.region,
           ad.city,
           ad.district,
           -- Wealth is judged where the home is; the delivery address stands in for it.
           CASE WHEN h.district IS NOT NULL THEN 'home' WHEN ad.district IS NOT NULL THEN 'delivery' END AS wealth_place,
           coalesce(h.district, ad.district) AS wealth_district,
           coalesce(dm.price_per_sq_m_kopecks, dall.price_per_sq_m_kopecks, dnew.price_per_sq_m_kopecks) AS district_price_per_sq_m_kopecks,
           coalesce(dm.event_id, dall.event_id, dnew.event_id) AS district_price_event_id,
           h.event_id AS register_event_id,
           h.stated_market,
           h.market,
           h.object_type,
           h.build_year,
           h.years_built_before,
           h.right_registration_date,
           h.area_sq_m,
           h.cadastral_value_kopecks,
           h.cadastral_per_sq_m_kopecks,
           h.amenities,
           CAST(floor((a.as_of_ms - h.registered_ms) / 86400000.0) AS INT) AS days_since_registration,
           k.consents,
           k.consents_because
    FROM as_of a
    LEFT JOIN visits v ON v.customer_id = a.customer_id
    LEFT JOIN undecided u ON u.customer_id = a.customer_id
    LEFT JOIN brands b ON b.customer_id = a.customer_id
    LEFT JOIN spend sp ON sp.customer_id = a.customer_id
    LEFT JOIN departments d ON d.customer_id = a.customer_id
    LEFT JOIN address ad ON ad.customer_id = a.customer_id
    LEFT JOIN home_market h ON h.customer_id = a.customer_id
    -- The index of the home's own segment, else the one over all segments, else resale.
    LEFT JOIN district_price dm ON dm.district = coalesce(h.district, ad.district) AND dm.market = h.market
    LEFT JOIN district_price dall ON dall.district = coalesce(h.district, ad.district) AND dall.market = 'unknown'
    LEFT JOIN district_price dnew ON dnew.district = coalesce(h.district, ad.district) AND dnew.market = 'secondary'
    LEFT JOIN social s ON s.customer_id = a.customer_id
    LEFT JOIN consent k ON k.customer_id = a.customer_id
),
decided AS (
    SELECT j.*,
           coalesce(undecided_sessions > 0, false) AS undecided_shopper,
           coalesce(top_brand_share >= 0.6 AND branded_views >= 4 AND coalesce(search_share, 0.0) < 0.5, false) AS brand_loyal,
           coalesce(renovation_burst >= 2.0, false) AS renovation_burst_flag,
           -- Materials, not only wallpaper and decor, mean a full renovation.
           CASE WHEN coalesce(renovation_spend_kopecks, 0) > 0 THEN 'full'
                WHEN coalesce(bought_wallpaper, 0) = 1 THEN 'cosmetic'
                ELSE 'none' END AS renovation_scope,
           CASE WHEN district_price_per_sq_m_kopecks IS NOT NULL THEN
                     CASE WHEN district_price_per_sq_m_kopecks >= 40000000 THEN 'high'
                          WHEN district_price_per_sq_m_kopecks >= 20000000 THEN 'mid' ELSE 'low' END
                -- The cadastral value lags the market (about 60-90 % of it).
                WHEN cadastral_per_sq_m_kopecks IS NOT NULL THEN
                     CASE WHEN cadastral_per_sq_m_kopecks >= 25000000 THEN 'high'
                          WHEN cadastral_per_sq_m_kopecks >= 12000000 THEN 'mid' ELSE 'low' END
                ELSE 'unknown' END AS wealth_tier,
           coalesce(market, 'unknown') AS housing_market,
           coalesce(days_since_registration BETWEEN 0 AND 180, false) AS new_homeowner,
           -- Contractors buy the same materials by the dozen, order after order.
           coalesce(orders >= 4 AND units >= 15.0 * order_lines, false) AS bulk_buyer,
           -- Where they are in settling in: the newest kind of purchase within 90 days.
           -- Renovation first; furniture and bathroom, then textiles, lighting, decor and
           -- wallpaper (the cosiness stages); live flowers belong to decorating and after.
           CASE WHEN coalesce(days_since_renovation_purchase, 9999) <= 90
                     OR coalesce(days_since_registration BETWEEN 0 AND 90, false) THEN 'renovating'
                WHEN coalesce(days_since_furnishing_purchase, 9999) <= 90 THEN 'furnishing'
                WHEN coalesce(days_since_decor_purchase, 9999) <= 90
                     OR coalesce(days_since_garden_purchase, 9999) <= 90 THEN 'decorating'
                ELSE 'settled' END AS lifecycle_stage
    FROM joined j
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
       undecided_shopper,
       CASE WHEN undecided_shopper
            THEN concat('undecided_visit: session ', undecided_session_id, ' went through ', CAST(undecided_products AS STRING),
                        ' products of ', undecided_department, ' in ', CAST(CAST(floor(undecided_dwell_ms / 60000.0) AS BIGINT) AS STRING),
                        ' min (>= 5 products of one department in >= 30 min)')
            ELSE concat('undecided_visit: none of ', CAST(sessions AS STRING), ' sessions lasted 30 min over 5 products of one department')
       END AS undecided_shopper_because,
       search_share,
       direct_share,
       top_brand_share,
       brand_loyal,
       CASE WHEN top_brand IS NULL THEN 'brand_share: no branded product viewed'
            ELSE concat('brand_share: ', top_brand, ' ', CAST(top_brand_views AS STRING), ' of ', CAST(branded_views AS STRING),
                        ' branded views; ', CAST(coalesce(search_sessions, 0) AS STRING), ' of ', CAST(sessions AS STRING),
                        ' sessions from a search engine (loyal: >= 60 % one brand over >= 4 views, under half from search)')
       END AS brand_loyal_because,
       -- What they buy and how much.
       orders,
       spend_kopecks,
       spend_90d_kopecks,
       CASE WHEN orders = 0 THEN 'none'
            WHEN spend_kopecks >= 3000000 * orders THEN 'high'
            WHEN spend_kopecks >= 1000000 * orders THEN 'mid' ELSE 'low' END AS spend_tier,
       bulk_buyer,
       concat('bulk_orders: ', CAST(CAST(coalesce(units, 0) AS BIGINT) AS STRING), ' units over ', CAST(coalesce(order_lines, 0) AS STRING),
              ' order lines in ', CAST(orders AS STRING), ' orders (bulk: >= 15 units a line, >= 4 orders)') AS bulk_buyer_because,
       coalesce(renovation_spend_kopecks, 0) AS renovation_spend_kopecks,
       coalesce(renovation_spend_14d_kopecks, 0) AS renovation_spend_14d_kopecks,
       renovation_burst,
       renovation_burst_flag,
       CASE WHEN renovation_burst IS NULL
            THEN concat('renovation_burst: ', CAST(CAST(coalesce(renovation_spend_14d_kopecks, 0) / 100 AS BIGINT) AS STRING),
                        ' RUB of Ремонт in the last 14 days and none before to compare with')
            ELSE concat('renovation_burst: ', CAST(CAST(renovation_spend_14d_kopecks / 100 AS BIGINT) AS STRING),
                        ' RUB of Ремонт in the last 14 days against ', CAST(CAST((renovation_spend_kopecks - renovation_spend_14d_kopecks) / 100 AS BIGINT) AS STRING),
                        ' RUB before: ', CAST(CAST(round(renovation_burst * 100) AS BIGINT) AS STRING), ' % of the usual pace per 14 days (burst: >= 200 %)')
       END AS renovation_burst_flag_because,
       renovation_scope,
       CASE renovation_scope
            WHEN 'full' THEN concat('renovation_scope: ', CAST(renovation_orders AS STRING), ' orders of Ремонт materials, ',
                                    CAST(CAST(renovation_spend_kopecks / 100 AS BIGINT) AS STRING), ' RUB')
            WHEN 'cosmetic' THEN 'renovation_scope: wallpaper bought, no Ремонт materials'
            ELSE 'renovation_scope: no Ремонт materials or wallpaper bought'
       END AS renovation_scope_because,
       -- Where and how they live.
       region,
       city,
       district,
       wealth_district,
       district_price_per_sq_m_kopecks,
       cadastral_per_sq_m_kopecks,
       wealth_tier,
       CASE WHEN district_price_per_sq_m_kopecks IS NOT NULL
            THEN concat('district_price: ', wealth_district, ' (', wealth_place, ') ', CAST(CAST(district_price_per_sq_m_kopecks / 100 AS BIGINT) AS STRING),
                        ' RUB/m2 in ', district_price_event_id, ' (high: >= 400000, mid: >= 200000)')
            WHEN cadastral_per_sq_m_kopecks IS NOT NULL
            THEN concat('cadastral_value: ', CAST(CAST(cadastral_per_sq_m_kopecks / 100 AS BIGINT) AS STRING), ' RUB/m2 in ', register_event_id,
                        ', no price index for the district (high: >= 250000, mid: >= 120000)')
            ELSE 'no district price index, delivery district or register record'
       END AS wealth_tier_because,
       housing_market,
       CASE WHEN register_event_id IS NULL THEN 'no register record'
            WHEN stated_market IN ('new_build', 'secondary') THEN concat('register_market: ', register_event_id, ' states ', stated_market)
            WHEN market = 'unknown' THEN concat('build_year_vs_registration: ', register_event_id, ' ', object_type, ' without a build year to compare')
            ELSE concat('build_year_vs_registration: ', register_event_id, ' ', object_type, ' built ', CAST(build_year AS STRING),
                        ', right registered ', CAST(right_registration_date AS STRING), ', ', CAST(years_built_before AS STRING),
                        ' years later (new build: <= 2)')
       END AS housing_market_because,
       object_type,
       build_year,
       area_sq_m,
       cadastral_value_kopecks,
       days_since_registration,
       new_homeowner,
       CASE WHEN register_event_id IS NULL THEN 'no register record'
            ELSE concat('right_registered: ', register_event_id, ' on ', CAST(right_registration_date AS STRING), ', ',
                        CAST(days_since_registration AS STRING), ' days before the newest event (new owner: <= 180)')
       END AS new_homeowner_because,
       CASE WHEN amenities IS NULL THEN NULL ELSE array_join(amenities, ',') END AS amenities,
       coalesce(array_contains(amenities, 'sauna'), false) AS has_sauna,
       coalesce(array_contains(amenities, 'pool'), false) AS has_pool,
       CASE WHEN interests IS NULL THEN NULL ELSE array_join(interests, ',') END AS social_interests,
       -- The purposes whose newest consent is `given`, comma-separated ('' for none).
       coalesce(consents, '') AS consents,
       CASE WHEN consents_because IS NULL THEN 'newest_consent: none recorded'
            ELSE concat('newest_consent: ', consents_because)
       END AS consents_because,
       lifecycle_stage,
       CASE WHEN coalesce(days_since_renovation_purchase, 9999) <= 90
            THEN concat('newest_purchase: Ремонт materials ', CAST(days_since_renovation_purchase AS STRING), ' days ago')
            WHEN coalesce(days_since_registration BETWEEN 0 AND 90, false)
            THEN concat('new_home: right registered ', CAST(days_since_registration AS STRING), ' days ago')
            WHEN coalesce(days_since_furnishing_purchase, 9999) <= 90
            THEN concat('newest_purchase: furniture or bathroom ', CAST(days_since_furnishing_purchase AS STRING), ' days ago')
            WHEN coalesce(days_since_decor_purchase, 9999) <= 90 OR coalesce(days_since_garden_purchase, 9999) <= 90
            THEN concat('newest_purchase: textiles, lighting, decor, wallpaper or garden ',
                        CAST(least(coalesce(days_since_decor_purchase, 9999), coalesce(days_since_garden_purchase, 9999)) AS STRING), ' days ago')
            ELSE 'no renovation, furnishing or decor purchase within 90 days'
       END AS lifecycle_stage_because
FROM decided;
