-- Raw bytes of the events topic with their Kafka coordinates, so bad records can be traced.
CREATE TEMPORARY TABLE ${table} (
  `payload`   BYTES,
  `topic`     STRING METADATA VIRTUAL,
  `partition` INT    METADATA VIRTUAL,
  `offset`    BIGINT METADATA VIRTUAL
) WITH (
  ${options}
)
