MERGE `proj.shop.orders` T
USING (
  SELECT * EXCEPT(__pipeline_rn) FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY `order_id` ORDER BY `__pipeline_seq` DESC) AS __pipeline_rn
    FROM `proj.shop.orders__pipeline_staging_a6eb7ff8087ac79f`
  ) WHERE __pipeline_rn = 1
) S
ON T.`order_id` = S.`order_id`
WHEN MATCHED THEN UPDATE SET
  `amount` = S.`amount`,
  `created_at` = S.`created_at`,
  `customer` = S.`customer`,
  `tags` = S.`tags`,
  `payload` = S.`payload`,
  `_pipeline_id` = S.`__pipeline_id`
WHEN NOT MATCHED THEN INSERT (`order_id`, `amount`, `created_at`, `customer`, `tags`, `payload`, `_pipeline_id`)
  VALUES (S.`order_id`, S.`amount`, S.`created_at`, S.`customer`, S.`tags`, S.`payload`, S.`__pipeline_id`)
