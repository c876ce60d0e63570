//! `hashtale story`, `hashtale train story`, `hashtale eval story` (owned by the story-model work).
use clap::Args;

#[derive(Args)]
pub struct StoryArgs {
    /// The hashtag that seeds the story, e.g. "#beach".
    pub seed: String,
}
#[derive(Args)]
pub struct TrainStoryArgs {}
#[derive(Args)]
pub struct EvalStoryArgs {}

pub fn run(_a: StoryArgs) -> anyhow::Result<()> {
    anyhow::bail!("the story model is not built yet")
}
pub fn run_train(_a: TrainStoryArgs) -> anyhow::Result<()> {
    anyhow::bail!("the story model is not built yet")
}
pub fn run_eval(_a: EvalStoryArgs) -> anyhow::Result<()> {
    anyhow::bail!("the story model is not built yet")
}
