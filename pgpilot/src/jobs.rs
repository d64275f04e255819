use clap::Args;

use crate::exit::Outcome;

#[derive(Args)]
pub struct JobsArgs {}

#[derive(Args)]
pub struct PartitionsArgs {}

pub fn run(_args: JobsArgs) -> Outcome {
    anyhow::bail!("`pgpilot jobs` is not built yet")
}

pub fn partitions(_args: PartitionsArgs) -> Outcome {
    anyhow::bail!("`pgpilot partitions` is not built yet")
}
