-- The demo application's schema: a personal-finance ledger and a workflow/forms service.
-- Indexes and foreign keys are added after the data is loaded (see indexes.sql).

CREATE SCHEMA ledger;
CREATE SCHEMA flow;

CREATE TABLE ledger.users (
    id          bigint PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    full_name   text NOT NULL,
    country     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger.categories (
    id    int PRIMARY KEY,
    name  text NOT NULL UNIQUE,
    kind  text NOT NULL CHECK (kind IN ('expense', 'income', 'transfer'))
);

CREATE TABLE ledger.accounts (
    id         bigint PRIMARY KEY,
    user_id    bigint NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('checking', 'savings', 'credit_card', 'cash')),
    name       text NOT NULL,
    currency   char(3) NOT NULL DEFAULT 'EUR',
    balance    numeric(14,2) NOT NULL DEFAULT 0,
    opened_at  timestamptz NOT NULL DEFAULT now()
);

-- Booked money movements, one partition per month.
CREATE TABLE ledger.transactions (
    id           bigserial,
    account_id   bigint NOT NULL,
    category_id  int NOT NULL,
    amount       numeric(12,2) NOT NULL,
    booked_at    timestamptz NOT NULL DEFAULT now(),
    description  text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, booked_at)
) PARTITION BY RANGE (booked_at);

-- Monthly partitions from 14 months ago to 3 months ahead, and a default for anything else.
DO $$
DECLARE
    first_month date := date_trunc('month', now() - interval '14 months');
    m date;
BEGIN
    FOR i IN 0..17 LOOP
        m := first_month + make_interval(months => i);
        EXECUTE format(
            'CREATE TABLE ledger.%I PARTITION OF ledger.transactions FOR VALUES FROM (%L) TO (%L)',
            'transactions_' || to_char(m, 'YYYY_MM'), m, m + interval '1 month');
    END LOOP;
END
$$;
CREATE TABLE ledger.transactions_default PARTITION OF ledger.transactions DEFAULT;

CREATE TABLE ledger.budgets (
    user_id        bigint NOT NULL,
    category_id    int NOT NULL,
    monthly_limit  numeric(12,2) NOT NULL,
    PRIMARY KEY (user_id, category_id)
);

CREATE TABLE flow.workflows (
    id          bigint PRIMARY KEY,
    name        text NOT NULL,
    definition  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE flow.runs (
    id           bigserial PRIMARY KEY,
    workflow_id  bigint NOT NULL,
    status       text NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    input        jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
);

CREATE TABLE flow.form_responses (
    id            bigserial PRIMARY KEY,
    workflow_id   bigint NOT NULL,
    run_id        bigint,
    submitted_at  timestamptz NOT NULL DEFAULT now(),
    answers       jsonb NOT NULL
);

-- Marks the database as holding pgpilot's demo application; the key ranges the mixes draw from.
CREATE TABLE public.pgpilot_demo (
    version       int NOT NULL,
    scale         float8 NOT NULL,
    users         bigint NOT NULL,
    accounts      bigint NOT NULL,
    categories    int NOT NULL,
    workflows     bigint NOT NULL,
    installed_at  timestamptz NOT NULL DEFAULT now()
);
