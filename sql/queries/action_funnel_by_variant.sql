-- The action funnel per experiment variant: decisions, those delivered (a control arm is only
-- logged), users reached, decisions whose outcome is known, conversions and their revenue.
SELECT a.experiment, a.variant,
       COUNT(*) AS decisions,
       SUM(CASE WHEN a.delivered THEN 1 ELSE 0 END) AS delivered,
       COUNT(DISTINCT a.user_id) AS users,
       COUNT(o.decision_id) AS with_outcome,
       SUM(CASE WHEN o.converted THEN 1 ELSE 0 END) AS converted,
       ROUND(COALESCE(SUM(o.revenue), 0), 2) AS revenue
FROM actions AS a
LEFT JOIN action_outcomes AS o ON o.decision_id = a.decision_id
WHERE a.experiment IS NOT NULL
GROUP BY a.experiment, a.variant
ORDER BY a.experiment, a.variant;
