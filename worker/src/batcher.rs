//! Collecting deliveries into batches: wait for a batch's first job, fill it until
//! `batch_size` or `max_wait`, start its jobs and hand the ready ones to the model stage;
//! plus settling deliveries that fail or fall out of batch order.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use hashtale_core::config::Config;
use hashtale_core::metrics;
use hashtale_core::{Error, Result};
use hashtale_fetch::Fetcher;
use hashtale_models::pipeline::ModelInput;
use hashtale_queue::{Delivery, DeliveryTag, JobConsumer, JobQueue};
use hashtale_store::{Store, WorkItem};
use hashtale_types::JobState;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::prepare::Prep;
use crate::{ModelStep, Ready};

/// Collects batches, fetches and decodes them, and hands them to the model stage.
///
/// A batch waits for its fetches at most `worker.fetch_wait_ms`: then it goes on with the
/// images that are ready. The late fetches go on (each has its own total deadline,
/// `fetch.timeout_ms`) and their jobs join a later batch, or fail on their own.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn prepare_loop(
    store: &Store,
    queue: &JobQueue,
    cfg: &Config,
    fetcher: &Fetcher,
    model: Arc<dyn ModelStep>,
    late: Late,
    consumer: &mut JobConsumer,
    tx: mpsc::Sender<(Vec<Ready>, Vec<ModelInput>)>,
    shutdown: &CancellationToken,
    batch_size: usize,
    max_wait: Duration,
) -> Result<()> {
    let fetch_wait = Duration::from_millis(cfg.worker.fetch_wait_ms);
    let mut p = Prep {
        store,
        queue,
        cfg,
        fetcher,
        model,
        late,
        permits: Arc::new(Semaphore::new(cfg.worker.fetch_concurrency.max(1))),
        fetching: HashMap::new(),
        fetches: FuturesUnordered::new(),
        ready: VecDeque::new(),
    };
    let outcome = loop {
        if shutdown.is_cancelled() {
            break Ok(());
        }
        let mut deliveries = Vec::new();
        // Wait for the first job of a batch (or shutdown)… While late fetches are in flight,
        // the wait is cut at max_wait so that an image landing meanwhile starts a batch of its
        // own. (The wait itself is never cancelled by a landing: the in-process queue's claim
        // is not cancel-safe.)
        if p.ready.is_empty() {
            let until = (!p.fetches.is_empty()).then(|| tokio::time::Instant::now() + max_wait);
            let next = consumer.next(until);
            tokio::pin!(next);
            let first = loop {
                tokio::select! {
                    d = &mut next => break Some(d),
                    Some((id, r)) = p.fetches.next(), if !p.fetches.is_empty() => {
                        p.landed(id, r).await
                    }
                    _ = shutdown.cancelled() => break None,
                }
            };
            match first {
                None => break Ok(()),
                Some(Ok(Some(d))) => deliveries.push(d),
                // The wait was cut for the late fetches (the broker may be away meanwhile: the
                // consumer subscribes again by itself).
                Some(Ok(None)) if until.is_some() => {
                    if p.ready.is_empty() {
                        continue;
                    }
                }
                // Only a consumer closed for good ends a wait without a deadline.
                Some(Ok(None)) => {
                    break Err(Error::Transient("the job consumer was closed".into()))
                }
                Some(Err(e)) => {
                    tracing::error!("receiving jobs: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        // …then take more until the batch is full or max_wait has passed.
        let room = batch_size.saturating_sub(p.ready.len());
        let deadline = tokio::time::Instant::now() + max_wait;
        while deliveries.len() < room {
            match consumer.next(Some(deadline)).await {
                Ok(Some(d)) => deliveries.push(d),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("receiving jobs: {e}");
                    break;
                }
            }
        }
        let ids = claim(&mut p, deliveries).await;
        // Wait for this batch's fetches, but no longer than fetch_wait (late ones that land
        // meanwhile are taken too).
        let wait_end = tokio::time::Instant::now() + fetch_wait;
        while p.any_fetching(&ids) {
            tokio::select! {
                Some((id, r)) = p.fetches.next() => p.landed(id, r).await,
                _ = tokio::time::sleep_until(wait_end) => break,
            }
        }
        let batch = p.take_batch(batch_size);
        if batch.0.is_empty() {
            continue;
        }
        // While the model stage is busy, the late fetches go on.
        let send = tx.send(batch);
        tokio::pin!(send);
        let sent = loop {
            tokio::select! {
                r = &mut send => break r.is_ok(),
                Some((id, r)) = p.fetches.next(), if !p.fetches.is_empty() => {
                    p.landed(id, r).await
                }
            }
        };
        if !sent {
            break Ok(());
        }
    };
    p.give_back().await;
    outcome
}

/// Claims the rows, skips jobs already done and starts fetching the rest; returns the job ids
/// being fetched. Failures are recorded here and do not reach the model.
async fn claim(p: &mut Prep<'_>, deliveries: Vec<Delivery>) -> Vec<i64> {
    if deliveries.is_empty() {
        return Vec::new();
    }
    let (store, queue, cfg) = (p.store, p.queue, p.cfg);
    let ids: Vec<i64> = deliveries.iter().map(|d| d.msg.job_id).collect();
    let items = match store.start_jobs(&ids).await {
        Ok(items) => items,
        Err(e) => {
            tracing::error!("starting jobs: {e}");
            for d in deliveries {
                let _ = d.requeue(store).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Vec::new();
        }
    };
    let mut by_id: HashMap<i64, WorkItem> = items.into_iter().map(|i| (i.job_id, i)).collect();
    let mut started = Vec::with_capacity(deliveries.len());
    let max_attempts = cfg.queue.max_attempts as i64;
    for d in deliveries {
        match by_id.remove(&d.msg.job_id) {
            Some(item) if item.state == JobState::Running && item.attempts > max_attempts => {
                // Earlier attempts ended without an outcome (the worker died, e.g. on this very
                // input): stop here instead of crashing worker after worker forever.
                let attempts = item.attempts;
                let e = format!(
                    "gave up: delivered for attempt {attempts} of at most {max_attempts} \
                     (earlier attempts ended without an outcome, e.g. a worker crash)"
                );
                fail_delivery(store, queue, cfg, d, attempts, &e, false).await;
            }
            Some(item) if item.state == JobState::Running => {
                started.push(item.job_id);
                p.start(d, item);
            }
            Some(item) => {
                // Done (or failed) already: a re-delivery. Nothing to do but acknowledge.
                tracing::debug!("job {} already {}, skipping", item.job_id, item.state);
                let _ = d.ack().await;
            }
            None => {
                tracing::warn!(
                    "job {} not in the store, dropping its message",
                    d.msg.job_id
                );
                let _ = d.ack().await;
            }
        }
    }
    started
}

pub(crate) async fn fail_delivery(
    store: &Store,
    queue: &JobQueue,
    cfg: &Config,
    d: Delivery,
    attempts: i64,
    error: &str,
    retryable: bool,
) {
    let job_id = d.msg.job_id;
    let will_retry = retryable && attempts < cfg.queue.max_attempts as i64;
    if will_retry {
        metrics::jobs_retried(1);
        tracing::info!("job {job_id} attempt {attempts} failed, will retry: {error}");
    } else {
        metrics::jobs_failed(1);
        tracing::warn!("job {job_id} failed after {attempts} attempt(s): {error}");
    }
    if let Err(e) = queue
        .fail(store, &cfg.queue, d, attempts, error, retryable)
        .await
    {
        tracing::error!("recording failure of job {job_id}: {e}");
    }
}

/// Deliveries settled out of delivery order: jobs whose fetch was still running (or whose
/// image did not fit) when their batch went on, so they join a later batch or fail on their
/// own. While one is unsettled, a later batch must not acknowledge with one `multiple` ack up
/// to its highest tag (that would take the late one too): it acknowledges job by job.
#[derive(Clone, Default)]
pub(crate) struct Late(Arc<Mutex<BTreeSet<DeliveryTag>>>);

impl Late {
    pub(crate) fn hold(&self, tag: Option<DeliveryTag>) {
        if let Some(t) = tag {
            self.0.lock().expect("late set").insert(t);
        }
    }

    /// Call once the delivery is settled (acknowledged, requeued or failed).
    pub(crate) fn settled(&self, tags: impl IntoIterator<Item = Option<DeliveryTag>>) {
        let mut set = self.0.lock().expect("late set");
        for t in tags.into_iter().flatten() {
            set.remove(&t);
        }
    }

    /// Whether a `multiple` ack up to the highest of `tags` takes no unsettled late delivery
    /// outside `tags` (conservatively, any unsettled one from an earlier subscription counts).
    pub(crate) fn multiple_ack_ok(&self, tags: &[DeliveryTag]) -> bool {
        let Some(&max) = tags.iter().max() else {
            return true;
        };
        let set = self.0.lock().expect("late set");
        set.range(..max).all(|t| tags.contains(t))
    }
}

/// Settles a failed delivery, then forgets it if it was late.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn fail_late(
    store: &Store,
    queue: &JobQueue,
    cfg: &Config,
    late: &Late,
    d: Delivery,
    attempts: i64,
    error: &str,
    retryable: bool,
) {
    let tag = d.tag();
    fail_delivery(store, queue, cfg, d, attempts, error, retryable).await;
    late.settled([tag]);
}
