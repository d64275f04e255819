\set workflow random(1, :workflows)
SELECT id, name, definition FROM flow.workflows WHERE id = :workflow;
