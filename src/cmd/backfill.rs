//! `hashtale backfill FILE`: enqueue a list of images (paths or URLs; plain, CSV or JSONL),
//! with a progress bar, a rate limit, and resume after interruption.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use hashtale_scheduler::backfill::{run_backfill, BackfillOptions};
use hashtale_scheduler::Ingestor;

use super::config::{open_queue, open_store, runtime, shutdown_signal, PipelineArgs};

#[derive(Args)]
pub struct BackfillArgs {
    /// The list: one path/URL per line, or .csv (url|path, external_id, caption), or .jsonl.
    pub file: PathBuf,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Source name of the posts (default: backfill:<file name>).
    #[arg(long)]
    pub source: Option<String>,
    /// Most posts per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Posts committed (and progress saved) together.
    #[arg(long, default_value_t = 500)]
    pub chunk: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: BackfillArgs) -> Result<()> {
    let cfg = a.pipeline.load()?;
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        let store = open_store(&cfg).await?;
        let queue = open_queue(&cfg, &store).await?;
        let ing = Ingestor::new(store.clone(), queue, &cfg.fetch)?;
        let opts = BackfillOptions {
            file: a.file,
            source: a.source,
            rate: a.rate,
            chunk: a.chunk,
            progress_bar: !a.quiet,
            max_bytes: cfg.fetch.max_bytes,
        };
        let r = run_backfill(&ing, &opts, shutdown).await?;
        println!(
            "backfill {}: {} entries, resumed from {}, {} new jobs, {} already known, {} unreadable",
            if r.finished { "finished" } else { "interrupted (rerun to resume)" },
            r.total,
            r.resumed_from,
            r.new_jobs,
            r.known,
            r.unreadable
        );
        Ok(())
    })
}
