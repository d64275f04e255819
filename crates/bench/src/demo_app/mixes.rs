//! The demo application's workloads as weighted pgbench-style scripts. Each script is one
//! application action; weights are percentages of transactions.

/// One application action.
#[derive(Debug, Clone, Copy)]
pub struct MixScript {
    pub name: &'static str,
    pub text: &'static str,
    /// Whether the action writes (inside BEGIN/COMMIT).
    pub writes: bool,
}

const fn read(name: &'static str, text: &'static str) -> MixScript {
    MixScript { name, text, writes: false }
}

const fn write(name: &'static str, text: &'static str) -> MixScript {
    MixScript { name, text, writes: true }
}

const ACCOUNT_BALANCE: MixScript = read("account_balance", include_str!("scripts/account_balance.sql"));
const USER_OVERVIEW: MixScript = read("user_overview", include_str!("scripts/user_overview.sql"));
const RECENT_TRANSACTIONS: MixScript =
    read("recent_transactions", include_str!("scripts/recent_transactions.sql"));
const MONTHLY_BUDGET: MixScript = read("monthly_budget", include_str!("scripts/monthly_budget.sql"));
const PENDING_RUNS: MixScript = read("pending_runs", include_str!("scripts/pending_runs.sql"));
const FORM_SEARCH: MixScript = read("form_search", include_str!("scripts/form_search.sql"));
/// Opening a form: its workflow's definition, which changes rarely (what a result cache is for).
const WORKFLOW_FORM: MixScript = read("workflow_form", include_str!("scripts/workflow_form.sql"));
const BOOK_TRANSACTION: MixScript = write("book_transaction", include_str!("scripts/book_transaction.sql"));
const START_RUN: MixScript = write("start_run", include_str!("scripts/start_run.sql"));
const CLAIM_RUN: MixScript = write("claim_run", include_str!("scripts/claim_run.sql"));
const FINISH_RUN: MixScript = write("finish_run", include_str!("scripts/finish_run.sql"));
const SUBMIT_FORM: MixScript = write("submit_form", include_str!("scripts/submit_form.sql"));

/// A named workload over the demo application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// 90% reads: balances, account overviews, recent transactions, budgets, pending runs, search,
    /// forms opened.
    ReadHeavy,
    /// 50% writes: booking transactions with balance updates, workflow runs, form submissions.
    WriteHeavy,
}

impl Mix {
    pub const ALL: [Mix; 2] = [Mix::ReadHeavy, Mix::WriteHeavy];

    pub fn name(self) -> &'static str {
        match self {
            Mix::ReadHeavy => "read-heavy",
            Mix::WriteHeavy => "write-heavy",
        }
    }

    pub fn from_name(name: &str) -> Option<Mix> {
        Mix::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The scripts and their weights, in percent of the mix's transactions (they sum to 100: a
    /// mix's weight in a bench run is split among its scripts by them).
    pub fn scripts(self) -> Vec<(MixScript, u32)> {
        let weights: [u32; 12] = match self {
            //                 bal ovw rec bud pend srch open book start claim fin form
            Mix::ReadHeavy => [25, 15, 15, 10, 10, 5, 10, 5, 2, 1, 1, 1],
            Mix::WriteHeavy => [10, 10, 10, 5, 5, 5, 5, 25, 8, 6, 5, 6],
        };
        let scripts = [
            ACCOUNT_BALANCE,
            USER_OVERVIEW,
            RECENT_TRANSACTIONS,
            MONTHLY_BUDGET,
            PENDING_RUNS,
            FORM_SEARCH,
            WORKFLOW_FORM,
            BOOK_TRANSACTION,
            START_RUN,
            CLAIM_RUN,
            FINISH_RUN,
            SUBMIT_FORM,
        ];
        scripts.into_iter().zip(weights).collect()
    }

    /// The share of transactions that write, in percent.
    pub fn write_percent(self) -> u32 {
        let scripts = self.scripts();
        let total: u32 = scripts.iter().map(|(_, w)| w).sum();
        let writes: u32 = scripts.iter().filter(|(s, _)| s.writes).map(|(_, w)| w).sum();
        writes * 100 / total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_have_the_advertised_shape() {
        assert_eq!(Mix::ReadHeavy.write_percent(), 10);
        assert_eq!(Mix::WriteHeavy.write_percent(), 50);
        for mix in Mix::ALL {
            assert_eq!(mix.scripts().iter().map(|(_, w)| w).sum::<u32>(), 100, "{}", mix.name());
        }
        assert_eq!(Mix::from_name("write-heavy"), Some(Mix::WriteHeavy));
    }

    #[test]
    fn writes_are_inside_explicit_transactions_and_reads_never_write() {
        for mix in Mix::ALL {
            for (s, _) in mix.scripts() {
                let upper = s.text.to_uppercase();
                let writes = ["INSERT", "UPDATE", "DELETE"].iter().any(|w| upper.contains(w));
                assert_eq!(writes, s.writes, "{}", s.name);
                if s.writes {
                    assert!(upper.contains("BEGIN;") && upper.contains("COMMIT;"), "{}", s.name);
                }
            }
        }
    }

    #[test]
    fn every_script_compiles() {
        let mut vars = crate::script::VarTable::default();
        for v in ["users", "accounts", "categories", "workflows"] {
            vars.intern(v);
        }
        for mix in Mix::ALL {
            let sources: Vec<_> = mix
                .scripts()
                .into_iter()
                .map(|(s, w)| (s.name.to_string(), u64::from(w), s.text.to_string()))
                .collect();
            crate::script::compile(&sources, &mut vars).unwrap();
        }
    }
}
