//! `hashtale scheduler`: watched folders, feeds and the ingest queue → posts and jobs.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use hashtale_scheduler::{spawn_sources, Ingestor};
use tokio_util::task::TaskTracker;

use super::config::{drain, open_queue, open_store, runtime, shutdown_signal, PipelineArgs};

#[derive(Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Folder to watch (repeatable; adds to scheduler.watch_dirs).
    #[arg(long)]
    pub watch: Vec<PathBuf>,
    /// RSS/Atom/JSON Feed URL to poll (repeatable; adds to scheduler.feeds).
    #[arg(long)]
    pub feed: Vec<String>,
    /// Seconds between feed polls (default: scheduler.feed_interval_s).
    #[arg(long)]
    pub feed_interval_s: Option<u64>,
}

pub fn run(a: SchedulerArgs) -> Result<()> {
    let mut cfg = a.pipeline.load()?;
    cfg.scheduler.watch_dirs.extend(a.watch);
    cfg.scheduler.feeds.extend(a.feed);
    if let Some(s) = a.feed_interval_s {
        cfg.scheduler.feed_interval_s = s.max(1);
    }
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        hashtale_api::serve_metrics(&cfg, "scheduler", None, shutdown.clone()).await?;
        let store = open_store(&cfg).await?;
        let queue = open_queue(&cfg, &store).await?;
        let n = queue.enqueue_pending(&store).await?;
        if n > 0 {
            tracing::info!("published {n} jobs left pending by an earlier run");
        }
        let ing = Ingestor::new(store.clone(), queue.clone(), &cfg.fetch)?;
        let (tracker, cancel) = (TaskTracker::new(), shutdown.child_token());
        spawn_sources(&ing, &cfg, &tracker, &cancel)?;
        cancel.cancelled().await;
        // Let the sources finish what they hold (a feed poll, a file, an ingest message).
        drain(&tracker, "the sources").await;
        store.close().await;
        tracing::info!("scheduler stopped");
        Ok(())
    })
}
