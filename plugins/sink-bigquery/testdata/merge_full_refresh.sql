BEGIN TRANSACTION;
DELETE FROM `proj.shop.orders` WHERE TRUE;
MERGE `proj.shop.orders` T
USING (
  SELECT * EXCEPT(__pipeline_rn) FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY `__pipeline_id` ORDER BY `__pipeline_seq` DESC) AS __pipeline_rn
    FROM `proj.shop.orders__pipeline_staging_b549225a8ec7299a`
  ) WHERE __pipeline_rn = 1
) S
ON T.`_pipeline_id` = S.`__pipeline_id`
WHEN MATCHED THEN UPDATE SET
  `order_id` = S.`order_id`,
  `amount` = S.`amount`,
  `created_at` = S.`created_at`,
  `customer` = S.`customer`,
  `tags` = S.`tags`,
  `payload` = S.`payload`
WHEN NOT MATCHED THEN INSERT (`order_id`, `amount`, `created_at`, `customer`, `tags`, `payload`, `_pipeline_id`)
  VALUES (S.`order_id`, S.`amount`, S.`created_at`, S.`customer`, S.`tags`, S.`payload`, S.`__pipeline_id`);
COMMIT TRANSACTION;
