-- Dead-letter topic: key = dead-letter id (source topic/partition/offset), value = JSON record.
CREATE TEMPORARY TABLE ${table} (
  `key`   BYTES,
  `value` BYTES
) WITH (
  ${options}
)
