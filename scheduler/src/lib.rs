//! The scheduler: turns sources into posts and new posts into jobs.
//!
//! Sources: watched folders (notify), RSS/Atom/JSON feeds (feed-rs, polled with ETag and
//! Last-Modified), the RabbitMQ ingest queue, and backfill files. Posts are unique per
//! (source, external id), so seeing the same thing twice never makes a second job.
pub mod backfill;
pub mod dir;
pub mod feed;
pub mod ingest;

use hashtale_core::metrics;
use hashtale_core::queue::JobQueue;
use hashtale_core::types::{Ingested, JobMessage, NewPost};
use hashtale_core::{Result, Store};

/// Stores posts and enqueues the jobs of new ones.
#[derive(Clone)]
pub struct Ingestor {
    pub store: Store,
    pub queue: JobQueue,
}

impl Ingestor {
    pub fn new(store: Store, queue: JobQueue) -> Self {
        Self { store, queue }
    }

    /// Stores one post; if it is new, its job is committed and then handed to the queue.
    /// Succeeds once the post is committed: a job the broker could not take now stays
    /// `pending` and is published when it is back (see [`JobQueue::maintain`]).
    pub async fn ingest(&self, post: &NewPost) -> Result<Ingested> {
        let r = self.ingest_only(post).await?;
        self.enqueue(std::slice::from_ref(&r)).await;
        Ok(r)
    }

    /// Stores a post without publishing its job (call [`Ingestor::enqueue`] for a chunk).
    pub async fn ingest_only(&self, post: &NewPost) -> Result<Ingested> {
        let r = self.store.ingest(post, self.queue.initial_state()).await?;
        if r.job_id.is_some() {
            metrics::posts_ingested(1);
        }
        Ok(r)
    }

    /// Stores many posts in one transaction and enqueues the new ones' jobs.
    pub async fn ingest_many(&self, posts: &[NewPost]) -> Result<Vec<Ingested>> {
        let r = self
            .store
            .ingest_many(posts, self.queue.initial_state())
            .await?;
        let new = r.iter().filter(|i| i.job_id.is_some()).count();
        metrics::posts_ingested(new as u64);
        self.enqueue(&r).await;
        Ok(r)
    }

    /// Hands a chunk of new jobs to the queue; returns whether they were taken. Jobs it could
    /// not hand over (the broker is away) stay `pending` in the store, which is what publishes
    /// them later: a failure here is logged, not returned.
    pub async fn enqueue(&self, ingested: &[Ingested]) -> bool {
        let msgs: Vec<JobMessage> = ingested
            .iter()
            .filter_map(|r| {
                r.job_id.map(|job_id| JobMessage {
                    job_id,
                    post_id: r.post_id,
                })
            })
            .collect();
        match self.queue.enqueue(&self.store, &msgs).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    "{} new jobs committed but not queued yet ({e}); they are published once the broker is back",
                    msgs.len()
                );
                false
            }
        }
    }
}

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
    let fetcher = hashtale_core::fetch::Fetcher::new(&cfg.fetch)?;
    for f in &cfg.scheduler.feeds {
        tracker.spawn(feed::poll_feed(
            ing.clone(),
            fetcher.clone(),
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
