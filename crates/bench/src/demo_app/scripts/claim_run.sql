\set workflow random(1, :workflows)
BEGIN;
UPDATE flow.runs SET status = 'running', started_at = now()
WHERE id = (SELECT id FROM flow.runs
            WHERE workflow_id = :workflow AND status = 'pending'
            ORDER BY created_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED);
COMMIT;
