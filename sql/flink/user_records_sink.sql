-- A Kafka topic of records by user: key = the user id (UTF-8), value = `record` as it is.
CREATE TEMPORARY TABLE ${table} (
  `user_id` STRING,
  `record`  BYTES
) WITH (
  ${options}
)
