-- view: changed_customer
-- Customers with any raw event that landed since the mart being folded last ran (the
-- `new_raw` schema is re-pointed for every mart, so this view follows it).
SELECT customer_id FROM new_raw.site_session_start
UNION SELECT customer_id FROM new_raw.site_page_view
UNION SELECT customer_id FROM new_raw.site_product_view
UNION SELECT customer_id FROM new_raw.site_search
UNION SELECT customer_id FROM new_raw.site_cart_add
UNION SELECT customer_id FROM new_raw.store_order
UNION SELECT customer_id FROM new_raw.partner_stroydom_order
UNION SELECT customer_id FROM new_raw.partner_uyutdom_order
UNION SELECT customer_id FROM new_raw.site_consent
UNION SELECT customer_id FROM new_raw.vk_profile
UNION SELECT customer_id FROM new_raw.instagram_profile
UNION SELECT customer_id FROM new_raw.register_real_estate
UNION SELECT customer_id FROM new_raw.site_rec_impression
UNION SELECT customer_id FROM new_raw.site_rec_click;
