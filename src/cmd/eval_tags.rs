use clap::Args;
#[derive(Args)]
pub struct EvalTagsArgs {}
pub fn run(_a: EvalTagsArgs) -> anyhow::Result<()> { anyhow::bail!("todo") }
