//! The demo application: a personal-finance ledger (users, accounts, categories, transactions
//! partitioned by month with jsonb metadata, budgets) and a workflow/forms service (workflows with
//! jsonb definitions, runs, form responses), with a read-heavy and a write-heavy mix to drive it.
//!
//! Scale 1 is about 200,000 ledger transactions, 50,000 runs and 60,000 form responses, generated
//! server-side with INSERT ... SELECT. Some indexes are missing on purpose ([`MISSING_INDEXES`]) so
//! the advisor has real findings. Writes in both mixes run inside explicit transactions and reads
//! are plain SELECTs, so the mixes are safe behind a gateway that splits reads from writes.

mod mixes;
mod stats;

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

pub use mixes::{Mix, MixScript};
pub use stats::Stats;

/// Bumped when the schema changes incompatibly with the mixes.
pub const SCHEMA_VERSION: i32 = 1;

/// An index the demo leaves out on purpose, and the queries that miss it.
#[derive(Debug, Clone, Copy)]
pub struct MissingIndex {
    pub table: &'static str,
    /// The statement that would fix it.
    pub create: &'static str,
    /// Which part of the application suffers without it.
    pub used_by: &'static str,
}

pub const MISSING_INDEXES: [MissingIndex; 3] = [
    MissingIndex {
        table: "ledger.transactions",
        create: "CREATE INDEX ON ledger.transactions (account_id, booked_at DESC)",
        used_by: "recent transactions of an account, monthly spend by category, the account_id foreign key",
    },
    MissingIndex {
        table: "flow.runs",
        create: "CREATE INDEX ON flow.runs (workflow_id, created_at) WHERE status = 'pending'",
        used_by: "pending runs of a workflow, claiming the next pending run",
    },
    MissingIndex {
        table: "flow.form_responses",
        create: "CREATE INDEX ON flow.form_responses USING gin (answers jsonb_path_ops)",
        used_by: "form responses search by answers (jsonb containment @>)",
    },
];

/// A deliberately redundant index: a prefix of `ledger.accounts_user_id_kind_idx`.
pub const REDUNDANT_INDEX: &str = "ledger.accounts_user_id_idx";

const SCHEMA_SQL: &str = include_str!("schema.sql");
const DATA_SQL: &str = include_str!("data.sql");
const INDEXES_SQL: &str = include_str!("indexes.sql");

/// Row counts for a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub users: i64,
    pub accounts: i64,
    pub transactions: i64,
    pub workflows: i64,
    pub runs: i64,
    pub responses: i64,
}

impl Sizes {
    pub fn for_scale(scale: f64) -> Sizes {
        let n = |base: f64, min: i64| ((base * scale).round() as i64).max(min);
        Sizes {
            users: n(2_000.0, 10),
            accounts: n(5_000.0, 25),
            transactions: n(200_000.0, 1_000),
            workflows: n(100.0, 5),
            runs: n(50_000.0, 250),
            responses: n(60_000.0, 300),
        }
    }
}

/// Creates the demo schema and loads it at `scale` (1 = about 200k ledger transactions), replacing
/// an earlier installation. Refuses to touch `ledger` or `flow` schemas it did not create.
/// Runs in one transaction: a failure leaves nothing behind.
pub async fn install(client: &Client, scale: f64) -> Result<Stats> {
    if !(scale.is_finite() && scale > 0.0) {
        bail!("the demo scale must be a positive number (got {scale})");
    }
    let sizes = Sizes::for_scale(scale);
    let ours = is_installed(client).await?;
    let foreign = client
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname IN ('ledger', 'flow')", &[])
        .await?
        .get::<_, i64>(0);
    if foreign > 0 && !ours {
        bail!("schemas `ledger` or `flow` already exist and were not created by pgpilot's demo; refusing to replace them");
    }
    client.batch_execute("BEGIN").await?;
    let result = load(client, scale, sizes, ours).await;
    match result {
        Ok(()) => client.batch_execute("COMMIT").await.context("committing the demo data")?,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    }
    Stats::collect(client).await
}

async fn load(client: &Client, scale: f64, s: Sizes, replace: bool) -> Result<()> {
    if replace {
        client
            .batch_execute("DROP SCHEMA ledger, flow CASCADE; DROP TABLE public.pgpilot_demo")
            .await
            .context("dropping the previous demo installation")?;
    }
    client.batch_execute(SCHEMA_SQL).await.context("creating the demo schema")?;
    let data = DATA_SQL
        .replace("{users}", &s.users.to_string())
        .replace("{accounts}", &s.accounts.to_string())
        .replace("{transactions}", &s.transactions.to_string())
        .replace("{workflows}", &s.workflows.to_string())
        .replace("{runs}", &s.runs.to_string())
        .replace("{responses}", &s.responses.to_string());
    client.batch_execute(&data).await.context("loading the demo data")?;
    client.batch_execute(INDEXES_SQL).await.context("indexing the demo data")?;
    client
        .execute(
            "INSERT INTO public.pgpilot_demo (version, scale, users, accounts, categories, workflows) \
             VALUES ($1, $2, $3, $4, 20, $5)",
            &[&SCHEMA_VERSION, &scale, &s.users, &s.accounts, &s.workflows],
        )
        .await?;
    Ok(())
}

/// Whether this database holds the demo application.
pub async fn is_installed(client: &Client) -> Result<bool> {
    let row = client.query_one("SELECT to_regclass('public.pgpilot_demo') IS NOT NULL", &[]).await?;
    Ok(row.get(0))
}

/// The key ranges the mixes draw random parameters from, read from the installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRanges {
    pub users: i64,
    pub accounts: i64,
    pub categories: i64,
    pub workflows: i64,
}

impl KeyRanges {
    /// The script variables the ranges define.
    pub const VARIABLES: [&'static str; 4] = ["users", "accounts", "categories", "workflows"];

    pub async fn load(client: &Client) -> Result<KeyRanges> {
        if !is_installed(client).await? {
            bail!("the demo application is not installed in this database (run with --init)");
        }
        let row = client
            .query_one(
                "SELECT version, users, accounts, categories::bigint, workflows FROM public.pgpilot_demo LIMIT 1",
                &[],
            )
            .await
            .context("reading public.pgpilot_demo")?;
        let version: i32 = row.get(0);
        if version != SCHEMA_VERSION {
            bail!("the demo application was installed by another pgpilot version (schema {version}); run with --init");
        }
        Ok(KeyRanges {
            users: row.get(1),
            accounts: row.get(2),
            categories: row.get(3),
            workflows: row.get(4),
        })
    }

    /// Each of [`KeyRanges::VARIABLES`] with its value.
    pub fn variables(&self) -> [(&'static str, i64); 4] {
        let v = [self.users, self.accounts, self.categories, self.workflows];
        [
            (Self::VARIABLES[0], v[0]),
            (Self::VARIABLES[1], v[1]),
            (Self::VARIABLES[2], v[2]),
            (Self::VARIABLES[3], v[3]),
        ]
    }
}
