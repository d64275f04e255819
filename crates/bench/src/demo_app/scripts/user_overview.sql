\set user random(1, :users)
SELECT id, kind, name, balance FROM ledger.accounts WHERE user_id = :user ORDER BY kind;
