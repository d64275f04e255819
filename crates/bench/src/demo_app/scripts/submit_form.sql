\set workflow random(1, :workflows)
\set rating random(1, 5)
\set channel random(1, 4)
\set country random(1, 10)
BEGIN;
INSERT INTO flow.form_responses (workflow_id, answers)
VALUES (:workflow, jsonb_build_object(
    'rating', :rating::int,
    'channel', (ARRAY['web','mobile','email','phone'])[:channel::int],
    'country', (ARRAY['DE','FR','NL','ES','IT','PL','SE','US','GB','PT'])[:country::int],
    'comment', 'submitted by pgpilot bench',
    'nps', :rating::int * 2));
COMMIT;
