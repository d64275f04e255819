\set user random(1, :users)
SELECT c.name AS category, sum(-t.amount) AS spent, b.monthly_limit
FROM ledger.accounts a
JOIN ledger.transactions t ON t.account_id = a.id
JOIN ledger.categories c ON c.id = t.category_id
LEFT JOIN ledger.budgets b ON b.user_id = a.user_id AND b.category_id = t.category_id
WHERE a.user_id = :user AND t.booked_at >= date_trunc('month', now()) AND t.amount < 0
GROUP BY c.name, b.monthly_limit
ORDER BY spent DESC;
