//! `hashtale migrate`: apply the database migrations (also done at start by every component
//! unless `database.migrate_on_start = false`).
use anyhow::Result;
use clap::Args;

use super::config::{runtime, PipelineArgs};

#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

pub fn run(a: MigrateArgs) -> Result<()> {
    let mut cfg = a.pipeline.load()?;
    cfg.database.migrate_on_start = false;
    runtime()?.block_on(async {
        let store = super::config::open_store(&cfg).await?;
        store.migrate().await?;
        println!(
            "{} database migrated: {}",
            store.backend(),
            hashtale_core::config::mask_url_password(&cfg.database.url)
        );
        Ok(())
    })
}
