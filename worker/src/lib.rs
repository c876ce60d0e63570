//! The batching worker: takes jobs from the queue, fetches and decodes their images, runs the
//! models on dynamic batches, commits results, publishes them, then acknowledges.
//!
//! Three stages joined by one-slot channels — prepare (fetch, decode), model, commit — so
//! fetching and decoding the next batch overlaps the model run of this one, and the model does
//! not wait for the previous batch's commit. A batch closes at `batch_size` jobs or
//! `max_wait_ms` after its first job, whichever comes first. A bad image fails only its own
//! job (with the reason stored); the rest of the batch goes on.
//!
//! Results are delivered at least once through an outbox: a committed result owes its message
//! on the results exchange and its webhook call (`published_at`, `webhook_sent_at` NULL) until
//! they are confirmed; a sweep at start and every [`SWEEP_EVERY`] delivers what a worker that
//! died in between left owed. Consumers deduplicate by `result_id`.
//!
//! The worker outlives broker restarts: its consumer subscribes again once the broker is back
//! (with backoff) and the pipeline goes on. Deliveries held across the loss cannot be
//! acknowledged any more, so the broker hands them out again: a job already done is then only
//! acknowledged, and one run twice keeps its first result (results are unique per post and
//! model version). Store outages cost retries, not jobs: nothing is acknowledged before its
//! outcome is committed.
//!
//! # Module map
//!
//! - `lib.rs`: [`Worker`] and its run loop, which joins the stages below.
//! - `batcher`: collecting deliveries into batches; settling deliveries that fail or fall out
//!   of batch order.
//! - `prepare`: fetching and decoding each job's image.
//! - `infer`: the model stage (the model's blocking thread, one-image fallback).
//! - `commit`: storing results and acknowledging their deliveries.
//! - `outbox`: delivering committed results (marks, sweeps).
//! - `webhook`: the signed result webhook.
//! - [`model`]: the [`ModelStep`] trait and its implementations.
mod batcher;
mod commit;
mod infer;
pub mod model;
mod outbox;
mod prepare;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use hashtale_core::config::Config;
use hashtale_core::{Error, Result};
use hashtale_fetch::Fetcher;
use hashtale_models::pipeline::ModelInput;
use hashtale_queue::{Delivery, JobQueue, PENDING_GRACE};
use hashtale_store::{Store, WorkItem};
use hashtale_types::{now_ms, ResultMessage, Timings};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use batcher::{prepare_loop, Late};
use outbox::{deliver, Marks, MARK_FLUSH_AT};

pub use model::{ModelStep, NoopModelForOverheadBench};
pub use outbox::{sweep_outbox, Swept, SWEEP_EVERY, SWEEP_GRACE, WEBHOOK_MAX_AGE};
pub use webhook::{sign, Webhook};

/// A job whose image is decoded and ready for the model (the images travel beside the batch,
/// so they can be moved to the model's thread without copies).
struct Ready {
    delivery: Delivery,
    item: WorkItem,
    timings: Timings,
}

/// Model batches with the model's answers, waiting for their commit.
struct Inferred {
    batch: Vec<Ready>,
    outputs: Vec<hashtale_types::ImageResult>,
}

/// Most results committed in one statement when batches that queued up behind a slow commit
/// are committed together.
const MAX_GROUP_COMMIT: usize = 256;

/// Runs until `shutdown` turns true, then finishes the batch in hand and returns.
pub struct Worker {
    pub store: Store,
    pub queue: JobQueue,
    pub cfg: Config,
    pub model: Arc<dyn ModelStep>,
}

impl Worker {
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let batch_size = self.cfg.worker.batch_size.max(1);
        let max_wait = Duration::from_millis(self.cfg.worker.max_wait_ms);
        // Room for the batch filling, the one being prepared, the one prepared, the ones in the
        // model, the two waiting for their commit and the one being committed, plus one spare
        // so a batch never closes early only because the prefetch ran out.
        let mut consumer = self
            .queue
            .consumer(batch_size * (7 + self.cfg.worker.batches_in_flight.max(1)))
            .await?;
        let fetcher = Fetcher::new(&self.cfg.fetch)?;
        let webhook = Webhook::new(&self.cfg)?;
        let (tx, mut rx) = mpsc::channel::<(Vec<Ready>, Vec<ModelInput>)>(1);
        let version = self.model.version();
        let late = Late::default();
        tracing::info!(
            "worker started: model {version}, batch_size {batch_size}, max_wait {max_wait:?}, store {}",
            self.store.backend()
        );

        let prep = prepare_loop(
            &self.store,
            &self.queue,
            &self.cfg,
            &fetcher,
            self.model.clone(),
            late.clone(),
            &mut consumer,
            tx,
            &shutdown,
            batch_size,
            max_wait,
        );
        // Up to `batches_in_flight` batches are in the model at once, so the story engine
        // writes their stories in the same steps (one wide product instead of several narrow
        // ones); results leave in the order the batches came, while earlier ones are committed.
        let (done_tx, mut done_rx) = mpsc::channel::<Inferred>(2);
        let in_flight = self.cfg.worker.batches_in_flight.max(1);
        let infer = async {
            let mut running = FuturesOrdered::new();
            let mut more = true;
            loop {
                tokio::select! {
                    biased;
                    Some(r) = running.next(), if !running.is_empty() => {
                        if let Some(inferred) = r {
                            if done_tx.send(inferred).await.is_err() {
                                break;
                            }
                        }
                    }
                    next = rx.recv(), if more && running.len() < in_flight => match next {
                        Some((batch, images)) => running.push_back(self.infer(batch, images, &late)),
                        None => more = false,
                    },
                    else => break,
                }
            }
            drop(done_tx);
        };
        // Committed results' messages are delivered while the next batch is committed.
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<ResultMessage>>(4);
        let commit = async {
            while let Some(mut inferred) = done_rx.recv().await {
                // Group commit: batches that queued up behind a slow commit go in together, so
                // small model batches do not each pay a database round trip when the store
                // is the bottleneck (and cost nothing extra when it is not).
                while inferred.batch.len() < MAX_GROUP_COMMIT {
                    match done_rx.try_recv() {
                        Ok(more) => {
                            inferred.batch.extend(more.batch);
                            inferred.outputs.extend(more.outputs);
                        }
                        Err(_) => break,
                    }
                }
                match self.commit(inferred, &version, &late).await {
                    Ok(messages) if !messages.is_empty() => {
                        // Never wait on delivery: the results are durable in the outbox, so when
                        // a slow webhook or broker has delivery behind, the sweep sends these.
                        if let Err(mpsc::error::TrySendError::Full(m)) = out_tx.try_send(messages) {
                            tracing::debug!(
                                "delivery is behind; the outbox sweep will send {} results",
                                m.len()
                            );
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!("batch failed: {e}"),
                }
            }
            drop(out_tx);
            Ok::<_, Error>(())
        };
        let deliver = async {
            let mut marks = Marks::default();
            loop {
                let next = match marks.due() {
                    Some(at) => tokio::select! {
                        m = out_rx.recv() => m,
                        _ = tokio::time::sleep_until(at) => {
                            marks.flush(&self.store).await;
                            continue;
                        }
                    },
                    None => out_rx.recv().await,
                };
                let Some(mut messages) = next else { break };
                // Likewise, deliveries that queued up go out together.
                while messages.len() < MAX_GROUP_COMMIT {
                    match out_rx.try_recv() {
                        Ok(more) => messages.extend(more),
                        Err(_) => break,
                    }
                }
                deliver(&self.queue, &webhook, messages, &mut marks).await;
                if marks.len() >= MARK_FLUSH_AT {
                    marks.flush(&self.store).await;
                }
            }
            marks.flush(&self.store).await;
        };
        // The outbox sweep: at start (what a previous process left owed) and periodically,
        // for as long as the pipeline runs (an interrupted sweep only leaves things owed).
        let sweep = async {
            loop {
                if let Err(e) = sweep_outbox(&self.store, &self.queue, &webhook, SWEEP_GRACE).await
                {
                    tracing::warn!("outbox sweep: {e}");
                }
                // Jobs a publisher left pending (e.g. a backfill while the broker was away),
                // so that a deployment without a scheduler recovers them too.
                if self.queue.rabbit().is_some() {
                    let before = now_ms() - PENDING_GRACE.as_millis() as i64;
                    match self.queue.enqueue_pending_before(&self.store, before).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!("published {n} jobs left pending"),
                        Err(e) => tracing::warn!("publishing pending jobs: {e}"),
                    }
                }
                tokio::time::sleep(SWEEP_EVERY).await;
            }
        };
        let pipeline = async { tokio::join!(prep, infer, commit, deliver) };
        let (a, (), b, ()) = tokio::select! {
            r = pipeline => r,
            _ = sweep => unreachable!("the sweep loops until the pipeline ends"),
        };
        // Only now, with the batch in hand finished, give back what was taken but not started.
        if let Err(e) = consumer.release(&self.store).await {
            tracing::warn!("releasing unstarted jobs: {e}");
        }
        a.and(b)
    }
}
