-- Indexes and foreign keys, added after loading (one validation scan each instead of a check per row).
-- Deliberately absent, so the advisor has real findings (see demo_app::MISSING_INDEXES):
--   ledger.transactions (account_id, booked_at DESC)   recent transactions, monthly spend, FK lookups
--   flow.runs (workflow_id, created_at) WHERE status = 'pending'   pending runs of a workflow
--   flow.form_responses USING gin (answers jsonb_path_ops)          form responses search (@>)
-- Deliberately redundant: accounts_user_id_idx is a prefix of accounts_user_id_kind_idx.

CREATE INDEX accounts_user_id_idx ON ledger.accounts (user_id);
CREATE INDEX accounts_user_id_kind_idx ON ledger.accounts (user_id, kind);
CREATE INDEX form_responses_workflow_idx ON flow.form_responses (workflow_id, submitted_at DESC);

ALTER TABLE ledger.accounts ADD FOREIGN KEY (user_id) REFERENCES ledger.users;
ALTER TABLE ledger.transactions ADD FOREIGN KEY (account_id) REFERENCES ledger.accounts;
ALTER TABLE ledger.transactions ADD FOREIGN KEY (category_id) REFERENCES ledger.categories;
ALTER TABLE ledger.budgets ADD FOREIGN KEY (user_id) REFERENCES ledger.users;
ALTER TABLE ledger.budgets ADD FOREIGN KEY (category_id) REFERENCES ledger.categories;
ALTER TABLE flow.runs ADD FOREIGN KEY (workflow_id) REFERENCES flow.workflows;
ALTER TABLE flow.form_responses ADD FOREIGN KEY (workflow_id) REFERENCES flow.workflows;
ALTER TABLE flow.form_responses ADD FOREIGN KEY (run_id) REFERENCES flow.runs;

ANALYZE ledger.users, ledger.categories, ledger.accounts, ledger.transactions, ledger.budgets,
        flow.workflows, flow.runs, flow.form_responses;
