use clap::Args;
#[derive(Args)]
pub struct TrainTagsArgs {}
pub fn run(_a: TrainTagsArgs) -> anyhow::Result<()> { anyhow::bail!("todo") }
