//! `hashtale scheduler`: watched folders, feeds and the ingest queue → posts and jobs.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use hashtale_core::fetch::Fetcher;
use hashtale_scheduler::{dir, feed, ingest, Ingestor};

use super::config::{open_queue, open_store, runtime, shutdown_signal, PipelineArgs};

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
        let store = open_store(&cfg).await?;
        let queue = open_queue(&cfg, &store).await?;
        let n = queue.republish_pending(&store).await?;
        if n > 0 {
            tracing::info!("published {n} jobs left pending by an earlier run");
        }
        let ing = Ingestor::new(store.clone(), queue.clone());
        spawn_sources(&ing, &cfg, &shutdown)?;
        let mut s = shutdown.clone();
        let _ = s.wait_for(|v| *v).await;
        tracing::info!("scheduler stopped");
        Ok(())
    })
}

/// Starts a task per watched folder and feed, and the ingest consumer (RabbitMQ only).
pub fn spawn_sources(
    ing: &Ingestor,
    cfg: &hashtale_core::Config,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for d in &cfg.scheduler.watch_dirs {
        let (ing, d, s, max) = (
            ing.clone(),
            d.clone(),
            shutdown.clone(),
            cfg.fetch.max_bytes,
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = dir::watch_dir(ing, d.clone(), max, s).await {
                tracing::error!("watching {}: {e}", d.display());
            }
        }));
    }
    let fetcher = Fetcher::new(&cfg.fetch)?;
    for f in &cfg.scheduler.feeds {
        tasks.push(tokio::spawn(feed::poll_feed(
            ing.clone(),
            fetcher.clone(),
            f.clone(),
            Duration::from_secs(cfg.scheduler.feed_interval_s.max(1)),
            shutdown.clone(),
        )));
    }
    if cfg.scheduler.ingest {
        if let Some(r) = ing.queue.rabbit() {
            let (ing, r, s) = (ing.clone(), r.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = ingest::consume_ingest(ing, r, s).await {
                    tracing::error!("ingest queue: {e}");
                }
            }));
        }
    }
    Ok(tasks)
}
