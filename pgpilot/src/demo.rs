use clap::Args;

use crate::exit::Outcome;

#[derive(Args, Default)]
pub struct DemoArgs {}

pub fn run(_args: DemoArgs) -> Outcome {
    anyhow::bail!("`pgpilot demo` is not built yet")
}
