\set account random(1, :accounts)
\set category random(1, 16)
\set cents random(100, 25000)
\set merchant random(1, 500)
BEGIN;
INSERT INTO ledger.transactions (account_id, category_id, amount, description, metadata)
VALUES (:account, :category, :cents / -100.0, 'card payment',
        jsonb_build_object('merchant', 'merchant-' || :merchant, 'channel', 'card'));
UPDATE ledger.accounts SET balance = balance + :cents / -100.0 WHERE id = :account;
COMMIT;
