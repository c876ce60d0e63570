//! `hashtale hashtags build`, `hashtale eval expand` (owned by the Instagram-hashtag work).
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum HashtagsCmd {
    /// Build the co-occurrence statistics file from HARRISON's lists.
    Build(BuildArgs),
}
#[derive(Args)]
pub struct BuildArgs {}
#[derive(Args)]
pub struct EvalExpandArgs {}

pub fn run(_c: HashtagsCmd) -> anyhow::Result<()> {
    anyhow::bail!("hashtag expansion is not built yet")
}
pub fn run_eval(_a: EvalExpandArgs) -> anyhow::Result<()> {
    anyhow::bail!("hashtag expansion is not built yet")
}
