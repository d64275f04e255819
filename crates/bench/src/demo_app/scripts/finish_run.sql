\set workflow random(1, :workflows)
\set outcome random(1, 10)
BEGIN;
UPDATE flow.runs
SET status = CASE WHEN :outcome::int = 1 THEN 'failed' ELSE 'done' END, finished_at = now()
WHERE id = (SELECT id FROM flow.runs
            WHERE workflow_id = :workflow AND status = 'running'
            ORDER BY started_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED);
COMMIT;
