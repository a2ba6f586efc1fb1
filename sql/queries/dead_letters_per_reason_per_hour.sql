-- Dead letters per reason and hour, straight from the events.dlq topic (a dead letter is
-- placed at the time it was written, as it may have no readable event time).
SELECT DATE_FORMAT(TUMBLE_START(event_time, INTERVAL '1' HOUR), 'yyyy-MM-dd HH:mm') AS `hour`,
       reason,
       COUNT(*) AS letters,
       SUM(raw_size) AS raw_bytes
FROM kafka.events_dlq
GROUP BY TUMBLE(event_time, INTERVAL '1' HOUR), reason
ORDER BY `hour`, letters DESC, reason;
