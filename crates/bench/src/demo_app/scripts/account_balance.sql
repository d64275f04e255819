\set account random(1, :accounts)
SELECT id, name, balance, currency FROM ledger.accounts WHERE id = :account;
