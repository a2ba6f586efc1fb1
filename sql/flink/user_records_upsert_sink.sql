-- A Kafka topic of the latest record of each user (upsert-kafka): key = the user id (UTF-8),
-- value = `record` as it is; a deleted row becomes a tombstone.
CREATE TEMPORARY TABLE ${table} (
  `user_id` STRING NOT NULL,
  `record`  BYTES,
  PRIMARY KEY (`user_id`) NOT ENFORCED
) WITH (
  ${options}
)
