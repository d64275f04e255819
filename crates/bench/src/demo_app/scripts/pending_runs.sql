\set workflow random(1, :workflows)
SELECT id, created_at, input
FROM flow.runs
WHERE workflow_id = :workflow AND status = 'pending'
ORDER BY created_at
LIMIT 10;
