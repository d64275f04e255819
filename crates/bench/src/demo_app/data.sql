-- Loads the demo data server-side. {users}, {accounts}, {transactions}, {workflows}, {runs} and
-- {responses} are replaced by row counts before this runs. setseed makes the data repeatable.

SELECT setseed(0.42);

INSERT INTO ledger.categories (id, name, kind) VALUES
    (1, 'Groceries', 'expense'), (2, 'Rent', 'expense'), (3, 'Utilities', 'expense'),
    (4, 'Restaurants', 'expense'), (5, 'Transport', 'expense'), (6, 'Fuel', 'expense'),
    (7, 'Health', 'expense'), (8, 'Insurance', 'expense'), (9, 'Entertainment', 'expense'),
    (10, 'Shopping', 'expense'), (11, 'Travel', 'expense'), (12, 'Education', 'expense'),
    (13, 'Subscriptions', 'expense'), (14, 'Gifts', 'expense'), (15, 'Home', 'expense'),
    (16, 'Fees', 'expense'), (17, 'Salary', 'income'), (18, 'Refunds', 'income'),
    (19, 'Interest', 'income'), (20, 'Transfers', 'transfer');

INSERT INTO ledger.users (id, email, full_name, country, created_at)
SELECT g, 'user' || g || '@example.com', 'User ' || g,
       (ARRAY['DE','FR','NL','ES','IT','PL','SE','US','GB','PT'])[1 + g % 10],
       now() - random() * interval '3 years'
FROM generate_series(1, {users}) g;

-- User u owns accounts u, u + users, u + 2 * users, ... (checking, savings, credit card, cash).
INSERT INTO ledger.accounts (id, user_id, kind, name, opened_at)
SELECT g, 1 + (g - 1) % {users}, k.kind, initcap(replace(k.kind, '_', ' ')) || ' ' || g,
       now() - random() * interval '2 years'
FROM generate_series(1, {accounts}) g
CROSS JOIN LATERAL (SELECT (ARRAY['checking','savings','credit_card','cash'])[1 + ((g - 1) / {users}) % 4] AS kind) k;

-- Activity is skewed: low account ids are busier, as real customers are.
INSERT INTO ledger.transactions (account_id, category_id, amount, booked_at, description, metadata)
SELECT t.account_id, t.category_id,
       CASE WHEN t.category_id <= 16 THEN -round((2 + random() * 150)::numeric, 2)
            WHEN t.category_id = 17 THEN round((1500 + random() * 3000)::numeric, 2)
            ELSE round((random() * 200 - 100)::numeric, 2) END,
       t.booked_at,
       c.name || ' at ' || t.merchant,
       jsonb_build_object(
           'merchant', t.merchant,
           'channel', (ARRAY['card','online','transfer','cash'])[1 + t.g % 4],
           'city', (ARRAY['Berlin','Paris','Amsterdam','Madrid','Rome','Warsaw','Stockholm'])[1 + t.g % 7],
           'tags', CASE WHEN t.g % 9 = 0 THEN '["recurring"]'::jsonb ELSE '[]'::jsonb END)
FROM (
    SELECT g,
           1 + floor(power(random(), 1.5) * {accounts})::bigint AS account_id,
           CASE WHEN random() < 0.05 THEN 17 + floor(random() * 4)::int ELSE 1 + floor(random() * 16)::int END AS category_id,
           now() - random() * interval '365 days' AS booked_at,
           'merchant-' || (1 + floor(random() * 500)::int) AS merchant
    FROM generate_series(1, {transactions}) g
) t
JOIN ledger.categories c ON c.id = t.category_id;

UPDATE ledger.accounts a SET balance = s.total
FROM (SELECT account_id, sum(amount) AS total FROM ledger.transactions GROUP BY account_id) s
WHERE a.id = s.account_id;

-- Five budgets per user over distinct expense categories.
INSERT INTO ledger.budgets (user_id, category_id, monthly_limit)
SELECT u, 1 + (u * 7 + k * 3) % 16, 50 + floor(random() * 20) * 25
FROM generate_series(1, {users}) u CROSS JOIN generate_series(1, 5) k;

INSERT INTO flow.workflows (id, name, definition, created_at)
SELECT g,
       (ARRAY['Expense approval','Vendor onboarding','Loan application','Customer survey','Address change','Card dispute'])[1 + g % 6] || ' #' || g,
       jsonb_build_object(
           'version', 1 + g % 3,
           'sla_hours', 24 * (1 + g % 4),
           'steps', jsonb_build_array(
               jsonb_build_object('id', 'submit', 'type', 'form', 'fields', '["rating","channel","country","comment","nps"]'::jsonb),
               jsonb_build_object('id', 'review', 'type', 'approval', 'assignee', 'team-' || g % 5),
               jsonb_build_object('id', 'notify', 'type', 'email'))),
       now() - random() * interval '1 year'
FROM generate_series(1, {workflows}) g;

INSERT INTO flow.runs (workflow_id, status, input, created_at, started_at, finished_at)
SELECT r.workflow_id, r.status,
       jsonb_build_object('requested_by', 1 + floor(random() * {users})::int, 'priority', (ARRAY['low','normal','high'])[1 + r.g % 3]),
       r.created_at,
       CASE WHEN r.status <> 'pending' THEN r.created_at + interval '1 minute' END,
       CASE WHEN r.status IN ('done', 'failed') THEN r.created_at + interval '2 minutes' + random() * interval '2 hours' END
FROM (
    SELECT g, 1 + floor(random() * {workflows})::bigint AS workflow_id,
           CASE WHEN x < 0.80 THEN 'done' WHEN x < 0.85 THEN 'failed' WHEN x < 0.93 THEN 'running' ELSE 'pending' END AS status,
           now() - random() * interval '180 days' AS created_at
    FROM (SELECT g, random() AS x FROM generate_series(1, {runs}) g) s
) r;

INSERT INTO flow.form_responses (workflow_id, run_id, submitted_at, answers)
SELECT 1 + floor(random() * {workflows})::bigint,
       1 + floor(random() * {runs})::bigint,
       now() - random() * interval '180 days',
       jsonb_build_object(
           'rating', 1 + floor(random() * 5)::int,
           'channel', (ARRAY['web','mobile','email','phone'])[1 + floor(random() * 4)::int],
           'country', (ARRAY['DE','FR','NL','ES','IT','PL','SE','US','GB','PT'])[1 + floor(random() * 10)::int],
           'comment', CASE WHEN random() < 0.3 THEN 'please call me back' ELSE 'thanks' END,
           'nps', floor(random() * 11)::int)
FROM generate_series(1, {responses}) g;
