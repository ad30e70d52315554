INSERT INTO `proj.shop.orders` (`order_id`, `amount`, `created_at`, `customer`, `tags`, `payload`, `_pipeline_id`)
SELECT `order_id`, `amount`, `created_at`, `customer`, `tags`, `payload`, `__pipeline_id`
FROM `proj.shop.orders__pipeline_staging_c2e13c628fd5d80b`
ORDER BY `__pipeline_seq`
