BEGIN TRANSACTION;
DELETE FROM `proj.shop.labels` WHERE TRUE;
MERGE `proj.shop.labels` T
USING (
  SELECT * EXCEPT(__pipeline_rn) FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY `label_id` ORDER BY `updated_at` DESC NULLS LAST, `__pipeline_seq` DESC) AS __pipeline_rn
    FROM `proj.shop.labels__pipeline_staging_514d6b971849dacf`
  ) WHERE __pipeline_rn = 1
) S
ON T.`label_id` = S.`label_id`
WHEN MATCHED AND (T.`updated_at` IS NULL OR S.`updated_at` >= T.`updated_at`) THEN UPDATE SET
  `label` = S.`label`,
  `updated_at` = S.`updated_at`,
  `_pipeline_id` = S.`__pipeline_id`
WHEN NOT MATCHED THEN INSERT (`label_id`, `label`, `updated_at`, `_pipeline_id`)
  VALUES (S.`label_id`, S.`label`, S.`updated_at`, S.`__pipeline_id`);
COMMIT TRANSACTION;
