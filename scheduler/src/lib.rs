//! The scheduler: turns sources into posts and new posts into jobs.
//!
//! Sources: watched folders (notify), RSS/Atom/JSON feeds (feed-rs, polled with ETag and
//! Last-Modified), the RabbitMQ ingest queue, and backfill files. Posts are unique per
//! (source, external id), so seeing the same thing twice never makes a second job.
//!
//! # Module map
//!
//! - `lib.rs`: [`spawn_sources`], which starts every configured source.
//! - [`dir`]: watched folders (a file is taken once it stops changing).
//! - [`feed`]: feed polling, conditional on ETag and Last-Modified.
//! - [`ingest`]: the RabbitMQ ingest queue's consumer.
//! - [`backfill`]: backfill files, resumable.
//! - [`Ingestor`] (from hashtale-ingest): commits posts and hands their jobs to the queue.
pub mod backfill;
pub mod dir;
pub mod feed;
pub mod ingest;

use hashtale_core::Result;
pub use hashtale_ingest::Ingestor;

/// Starts every configured source on `tracker`: a task per watched folder and feed, and the
/// ingest consumer (RabbitMQ only). Each stops at `cancel` once the work in hand is done (a
/// file being ingested, a feed poll in progress, an ingest message being committed); close
/// the tracker and wait on it to let them finish.
pub fn spawn_sources(
    ing: &Ingestor,
    cfg: &hashtale_core::Config,
    tracker: &tokio_util::task::TaskTracker,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<()> {
    for d in &cfg.scheduler.watch_dirs {
        let (ing, d, c, max) = (ing.clone(), d.clone(), cancel.clone(), cfg.fetch.max_bytes);
        tracker.spawn(async move {
            if let Err(e) = dir::watch_dir(ing, d.clone(), max, c).await {
                tracing::error!("watching {}: {e}", d.display());
            }
        });
    }
    for f in &cfg.scheduler.feeds {
        tracker.spawn(feed::poll_feed(
            ing.clone(),
            ing.fetcher().clone(),
            f.clone(),
            std::time::Duration::from_secs(cfg.scheduler.feed_interval_s.max(1)),
            cancel.clone(),
        ));
    }
    // Publishes what the broker could not take, once it is back.
    if ing.queue.rabbit().is_some() {
        let maintain = ing.queue.clone().maintain(ing.store.clone());
        let c = cancel.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = c.cancelled() => {}
                _ = maintain => {}
            }
        });
    }
    if cfg.scheduler.ingest {
        if let Some(r) = ing.queue.rabbit() {
            let (ing, r, c) = (ing.clone(), r.clone(), cancel.clone());
            tracker.spawn(async move {
                if let Err(e) = ingest::consume_ingest(ing, r, c).await {
                    tracing::error!("ingest queue: {e}");
                }
            });
        }
    }
    Ok(())
}
