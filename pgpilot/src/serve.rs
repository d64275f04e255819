use clap::Args;

use crate::exit::Outcome;

#[derive(Args)]
pub struct ServeArgs {}

#[derive(Args)]
pub struct CheckConfigArgs {}

pub fn run(_args: ServeArgs) -> Outcome {
    anyhow::bail!("`pgpilot serve` is not built yet")
}

pub fn check_config(_args: CheckConfigArgs) -> Outcome {
    anyhow::bail!("`pgpilot check-config` is not built yet")
}
