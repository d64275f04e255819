use clap::Args;

use crate::exit::Outcome;

#[derive(Args, Default)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> Outcome {
    anyhow::bail!("`pgpilot bench` is not built yet")
}
