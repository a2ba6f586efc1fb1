-- Every score update of one user, in event time, from the scores topic. The scores name users
-- by pseudonym: put the user's here (`make pseudonym ID=<their id>` prints it).
SELECT event_time, profile_version, cohort_name, purchase, abandonment, drift, top_score
FROM kafka.scores
WHERE user_id = 'p-0123456789abcdef0123456789abcdef'
ORDER BY profile_version;
