use clap::Args;
#[derive(Args)]
pub struct ClassifyArgs {}
pub fn run(_a: ClassifyArgs) -> anyhow::Result<()> { anyhow::bail!("todo") }
