-- A Kafka topic written as raw key and value bytes (a NULL value is a tombstone).
CREATE TEMPORARY TABLE ${table} (
  `key`   BYTES,
  `value` BYTES
) WITH (
  ${options}
)
