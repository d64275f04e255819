use clap::Args;

use crate::exit::Outcome;

#[derive(Args, Default)]
pub struct AdviseArgs {}

pub fn run(_args: AdviseArgs) -> Outcome {
    anyhow::bail!("`pgpilot advise` is not built yet")
}
