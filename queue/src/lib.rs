//! Job queues: RabbitMQ (production) and an in-process queue backed by the jobs table
//! (embedded mode). The worker sees one interface, [`JobQueue`] / [`JobConsumer`].
//!
//! RabbitMQ topology for prefix `p` (all durable, messages persistent, publisher confirms):
//! - `p.jobs`: work queue; messages it rejects go to `p.dead`.
//! - `p.retry.{delay}ms`: one queue per backoff delay (`retry_backoff_ms × 2^(attempt-1)` for
//!   attempts 1 … max_attempts-1), each with a queue-level TTL of its delay, dead-lettering
//!   back to `p.jobs`. One delay per queue means every message at a queue's head is the next
//!   to expire, so a long backoff never holds back a shorter one (RabbitMQ expires messages
//!   only at the head of a queue).
//! - `p.dead`: parked jobs, with the error in header `x-error`.
//! - `p.ingest`: JSON posts for the scheduler.
//! - `p.results`: fanout exchange, one message per committed result.
//!
//! A delivery is acknowledged only after its outcome (result or failure) is committed, so a
//! worker that dies mid-batch loses nothing: the broker redelivers.
//!
//! The broker may go away (a restart, a network cut). [`Rabbit`] then reconnects with
//! exponential backoff and declares the topology again; its consumers ([`RabbitConsumer`])
//! subscribe again. A job whose message could not be published stays `pending` in the store and
//! is published by [`JobQueue::maintain`] once the broker is back; a delivery whose ack was lost
//! with the connection comes again and finds its job done. Nothing is lost, and results are
//! unique per (post, model version), so no post gets a second result.
//!
//! # Module map
//!
//! - `lib.rs`: [`JobQueue`], the one interface over both queues.
//! - [`rabbit`]: the RabbitMQ connection ([`Rabbit`]): publishing, consumers, reconnecting.
//! - [`local`]: the in-process queue ([`LocalQueue`]) and the SQL only it runs.
//! - [`delivery`]: [`Delivery`], [`Acker`], [`DeliveryTag`] and [`JobConsumer`].
//! - [`topology`]: queue names ([`Names`]), retry delays, their declaration, [`Backoff`].
pub mod delivery;
pub mod local;
pub mod rabbit;
pub mod topology;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use hashtale_core::config::QueueConfig;
use hashtale_core::Result;
use hashtale_store::Store;
use hashtale_types::{now_ms, JobMessage, JobState};

pub use delivery::{Acker, Delivery, DeliveryTag, JobConsumer};
pub use local::{Claimed, LocalQueue};
pub use rabbit::{error_header, Rabbit, RabbitConsumer, RawDelivery};
pub use topology::{retry_delay_ms, retry_delays, Backoff, Names, RECONNECT_MAX, RECONNECT_MIN};

/// How often [`JobQueue::maintain`] publishes jobs left `pending`.
pub const PENDING_SWEEP_EVERY: Duration = Duration::from_secs(2);
/// A job pending for less than this is left to the process that committed it.
pub const PENDING_GRACE: Duration = Duration::from_secs(2);
/// How often [`JobQueue::maintain`] checks the connection.
const MAINTAIN_TICK: Duration = Duration::from_millis(250);

/// Where jobs go and come from.
#[derive(Clone)]
pub enum JobQueue {
    Rabbit(Arc<Rabbit>),
    Local(LocalQueue),
}

impl JobQueue {
    /// Connects the configured queue. `store` backs the local queue.
    pub async fn connect(cfg: &QueueConfig, store: &Store) -> Result<Self> {
        Ok(match cfg.kind {
            hashtale_core::config::QueueKind::Rabbitmq => {
                JobQueue::Rabbit(Arc::new(Rabbit::connect_with(cfg).await?))
            }
            hashtale_core::config::QueueKind::Local => {
                JobQueue::Local(LocalQueue::new(store.clone()))
            }
        })
    }

    /// The state a new job row starts in: `pending` until its message is confirmed by the
    /// broker, or `queued` directly for the local queue (the row is the message).
    pub fn initial_state(&self) -> JobState {
        match self {
            JobQueue::Rabbit(_) => JobState::Pending,
            JobQueue::Local(_) => JobState::Queued,
        }
    }

    /// Hands new jobs to the queue (publishes them, then marks their rows queued).
    pub async fn enqueue(&self, store: &Store, jobs: &[JobMessage]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        match self {
            JobQueue::Rabbit(r) => {
                r.publish_jobs(jobs).await?;
                let ids: Vec<i64> = jobs.iter().map(|j| j.job_id).collect();
                store.mark_queued(&ids).await?;
            }
            JobQueue::Local(l) => l.notify(),
        }
        Ok(())
    }

    /// Hands the queue the jobs whose rows are still `pending` (a publisher died after its
    /// commit, or the broker was away): RabbitMQ publishes their messages, then marks them
    /// `queued`; the in-process queue publishes nothing, as its `queued` rows are the messages,
    /// so it only marks them `queued`. Either way running jobs are never touched. Returns how
    /// many jobs were handed over.
    pub async fn enqueue_pending(&self, store: &Store) -> Result<usize> {
        self.enqueue_pending_before(store, i64::MAX).await
    }

    /// [`JobQueue::enqueue_pending`] for jobs pending since before `before_ms` (ms since the
    /// epoch) only.
    pub async fn enqueue_pending_before(&self, store: &Store, before_ms: i64) -> Result<usize> {
        let mut total = 0;
        loop {
            let pending = store.pending_jobs_before(500, before_ms).await?;
            if pending.is_empty() {
                return Ok(total);
            }
            let msgs: Vec<JobMessage> = pending
                .iter()
                .map(|&(job_id, post_id)| JobMessage { job_id, post_id })
                .collect();
            match self {
                JobQueue::Rabbit(_) => self.enqueue(store, &msgs).await?,
                // The in-process queue reads `queued` rows: a pending job only needs its state
                // moved. Jobs a live worker is running are left alone.
                JobQueue::Local(_) => {
                    let ids: Vec<i64> = msgs.iter().map(|m| m.job_id).collect();
                    store.mark_queued(&ids).await?;
                }
            }
            total += msgs.len();
        }
    }

    /// Keeps a broker user's jobs flowing, for as long as the process runs (abort or drop it to
    /// stop; it is safe to cut anywhere): reconnects when the connection is lost (with
    /// backoff), and publishes the jobs left `pending` right after each reconnect and every
    /// [`PENDING_SWEEP_EVERY`] (those pending for over [`PENDING_GRACE`], so that a job whose
    /// own publish is under way is not sent twice). Returns at once for the in-process queue.
    pub async fn maintain(self, store: Store) {
        let JobQueue::Rabbit(r) = &self else { return };
        let mut seen = 0;
        let mut last_sweep: Option<Instant> = None;
        loop {
            if r.closed.load(Ordering::SeqCst) {
                return;
            }
            if r.ensure().await.is_ok() {
                let connects = r.connects();
                if connects != seen || last_sweep.is_none_or(|t| t.elapsed() >= PENDING_SWEEP_EVERY)
                {
                    let before = now_ms() - PENDING_GRACE.as_millis() as i64;
                    match self.enqueue_pending_before(&store, before).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!("published {n} jobs left pending"),
                        Err(e) => tracing::warn!("publishing pending jobs: {e}"),
                    }
                    seen = connects;
                    last_sweep = Some(Instant::now());
                }
            }
            tokio::time::sleep(MAINTAIN_TICK).await;
        }
    }

    /// Checks the broker connection, attempting a reconnect when the backoff allows one (for
    /// `/readyz`).
    pub async fn check_ready(&self) -> bool {
        match self {
            JobQueue::Rabbit(r) => r.ensure().await.is_ok(),
            JobQueue::Local(_) => true,
        }
    }

    /// A consumer handing out up to `prefetch` jobs at a time.
    pub async fn consumer(&self, prefetch: usize) -> Result<JobConsumer> {
        Ok(match self {
            JobQueue::Rabbit(r) => JobConsumer::Rabbit(Box::new(
                r.consumer(&r.names.jobs, prefetch.clamp(1, u16::MAX as usize) as u16)
                    .await?,
            )),
            JobQueue::Local(l) => JobConsumer::Local {
                q: l.clone(),
                buf: VecDeque::new(),
                prefetch: prefetch.max(1),
            },
        })
    }

    /// Records a failed attempt. Retryable errors with attempts left go back with exponential
    /// backoff; otherwise the job fails for good (RabbitMQ: parked in the dead-letter queue).
    /// The row is updated before the delivery is acknowledged.
    pub async fn fail(
        &self,
        store: &Store,
        cfg: &QueueConfig,
        d: Delivery,
        attempts: i64,
        error: &str,
        retryable: bool,
    ) -> Result<()> {
        let retry = retryable && attempts < cfg.max_attempts as i64;
        let delay = retry_delay_ms(cfg, attempts);
        match self {
            JobQueue::Rabbit(r) => {
                let (new_state, available_at) = if retry {
                    (JobState::Retrying, now_ms() + delay as i64)
                } else {
                    (JobState::Failed, now_ms())
                };
                let moved = match store
                    .fail_job(d.msg.job_id, error, new_state, available_at)
                    .await
                {
                    Ok(()) if retry => r.publish_retry(&d.msg, delay, error).await,
                    Ok(()) => r.publish_dead(&d.msg, error).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = moved {
                    // Neither acknowledge (the job would be lost) nor leave the delivery
                    // hanging (it would hold a prefetch slot until the channel closes): give
                    // it back for another try.
                    let _ = d.requeue(store).await;
                    return Err(e);
                }
            }
            JobQueue::Local(_) => {
                if retry {
                    store
                        .fail_job(
                            d.msg.job_id,
                            error,
                            JobState::Queued,
                            now_ms() + delay as i64,
                        )
                        .await?;
                } else {
                    store
                        .fail_job(d.msg.job_id, error, JobState::Failed, now_ms())
                        .await?;
                }
            }
        }
        d.ack().await
    }

    /// Jobs waiting in the queue (for `/metrics`).
    pub async fn depth(&self, store: &Store) -> Result<u64> {
        match self {
            JobQueue::Rabbit(r) => Ok(r.depth(&r.names.jobs).await? as u64),
            JobQueue::Local(_) => Ok(store
                .job_counts()
                .await?
                .into_iter()
                .find(|(s, _)| *s == JobState::Queued)
                .map_or(0, |(_, n)| n as u64)),
        }
    }

    /// Checks the broker connection (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        match self {
            JobQueue::Rabbit(r) => r.is_connected(),
            JobQueue::Local(_) => true,
        }
    }

    pub fn rabbit(&self) -> Option<&Arc<Rabbit>> {
        match self {
            JobQueue::Rabbit(r) => Some(r),
            JobQueue::Local(_) => None,
        }
    }
}
