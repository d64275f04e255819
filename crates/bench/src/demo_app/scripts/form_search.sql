\set rating random(1, 5)
\set channel random(1, 4)
SELECT id, workflow_id, submitted_at
FROM flow.form_responses
WHERE answers @> jsonb_build_object('rating', :rating::int, 'channel', (ARRAY['web','mobile','email','phone'])[:channel::int])
ORDER BY submitted_at DESC
LIMIT 20;
