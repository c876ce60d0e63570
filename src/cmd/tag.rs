use clap::Args;
#[derive(Args)]
pub struct TagArgs {}
pub fn run(_a: TagArgs) -> anyhow::Result<()> { anyhow::bail!("todo") }
