\set workflow random(1, :workflows)
\set requester random(1, :users)
BEGIN;
INSERT INTO flow.runs (workflow_id, status, input)
VALUES (:workflow, 'pending', jsonb_build_object('requested_by', :requester::int, 'priority', 'normal'));
COMMIT;
