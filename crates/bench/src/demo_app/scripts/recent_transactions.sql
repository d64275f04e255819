\set account random(1, :accounts)
SELECT id, amount, booked_at, description, metadata->>'merchant' AS merchant
FROM ledger.transactions
WHERE account_id = :account AND booked_at > now() - interval '60 days'
ORDER BY booked_at DESC
LIMIT 20;
