-- Every score update of one user, in event time, from the scores topic (change the user id).
SELECT event_time, profile_version, cohort_name, purchase, abandonment, drift, top_score
FROM kafka.scores
WHERE user_id = 'u000007'
ORDER BY profile_version;
