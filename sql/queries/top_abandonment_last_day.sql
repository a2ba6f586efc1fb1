-- The ten users most at risk of abandoning a cart: each user's highest abandonment score over
-- the last day of event time (the score exists only while a cart is open), from the scores
-- topic. For the users at risk at this very moment, read user_scores instead.
SELECT user_id, MAX(abandonment) AS peak_abandonment, MAX(event_time) AS last_scored
FROM kafka.scores
WHERE abandonment IS NOT NULL
  AND event_time >= (SELECT MAX(event_time) FROM kafka.scores) - INTERVAL '1' DAY
GROUP BY user_id
ORDER BY peak_abandonment DESC, user_id
LIMIT 10;
