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
pub mod model;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use hashtale_core::config::Config;
use hashtale_core::metrics;
use hashtale_core::{Error, Result};
use hashtale_fetch::{decode_image, Fetcher};
use hashtale_models::pipeline::ModelInput;
use hashtale_queue::{Delivery, DeliveryTag, JobConsumer, JobQueue, PENDING_GRACE};
use hashtale_store::Store;
use hashtale_store::{self, NewResult, Owed, WorkItem};
use hashtale_types::now_ms;
use hashtale_types::JobState;
use hashtale_types::{ImageSource, ResultMessage, Timings};
use tokio::sync::{mpsc, watch, Semaphore};

pub use model::{ModelStep, NoopModelForOverheadBench};

/// How often the outbox is swept for owed deliveries.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A result younger than this is left to the worker that committed it (it is probably
/// publishing it right now; sweeping it too would only duplicate the message).
pub const SWEEP_GRACE: Duration = Duration::from_secs(5);
/// Webhook calls owed for longer than this are given up (an endpoint gone for a day should
/// not get the backlog of the whole history when it comes back).
pub const WEBHOOK_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

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
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
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
            &mut shutdown,
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
                    match self
                        .queue
                        .republish_pending_before(&self.store, before)
                        .await
                    {
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

    /// The model step on a blocking thread. When the batch fails (an error, a panic, a wrong
    /// result count), it is run again one image at a time, so only the image that fails alone
    /// fails: that one is parked with its reason (it failed twice, in the batch and alone); the
    /// others go on. A failing batch of one image gets a retry (the cause may be passing).
    async fn infer(
        &self,
        mut batch: Vec<Ready>,
        images: Vec<ModelInput>,
        late: &Late,
    ) -> Option<Inferred> {
        if batch.is_empty() {
            return None;
        }
        metrics::batch_size(batch.len());
        let images = Arc::new(images);
        let t0 = Instant::now();
        let outputs = self.run_model(images.clone(), None).await;
        let model_s = t0.elapsed().as_secs_f64();
        metrics::model_seconds(model_s);
        let outputs = match outputs {
            Ok(o) => o,
            Err(e) if batch.len() == 1 => {
                let r = batch.pop().expect("one job");
                let attempts = r.item.attempts;
                self.fail(r.delivery, attempts, &e, true, late).await;
                return None;
            }
            Err(e) => {
                tracing::warn!(
                    "model failed on a batch of {}: {e}; running its images one at a time",
                    batch.len()
                );
                let mut kept = Vec::with_capacity(batch.len());
                let mut outputs = Vec::with_capacity(batch.len());
                for (i, r) in batch.into_iter().enumerate() {
                    match self.run_model(images.clone(), Some(i)).await {
                        Ok(mut one) => {
                            outputs.push(one.remove(0));
                            kept.push(r);
                        }
                        Err(e) => {
                            let attempts = r.item.attempts;
                            let reason = format!("the model fails on this image: {e}");
                            self.fail(r.delivery, attempts, &reason, false, late).await;
                        }
                    }
                }
                if kept.is_empty() {
                    return None;
                }
                batch = kept;
                outputs
            }
        };
        let n = batch.len();
        for r in &mut batch {
            r.timings.model_batch_ms = model_s * 1e3;
            r.timings.batch_size = n;
        }
        Some(Inferred { batch, outputs })
    }

    /// Runs the model on every image (or only image `only`) on a blocking thread; a panic or a
    /// result count that does not match is an error.
    async fn run_model(
        &self,
        images: Arc<Vec<ModelInput>>,
        only: Option<usize>,
    ) -> std::result::Result<Vec<hashtale_types::ImageResult>, String> {
        let model = self.model.clone();
        let expected = if only.is_some() { 1 } else { images.len() };
        let out = tokio::task::spawn_blocking(move || match only {
            Some(i) => model.run_batch(&images[i..i + 1]),
            None => model.run_batch(&images),
        })
        .await
        .map_err(|e| format!("model task: {e}"))??;
        if out.len() != expected {
            return Err(format!(
                "model returned {} results for {expected} images",
                out.len()
            ));
        }
        Ok(out)
    }

    /// Commits the batch's results (recording what they owe in the outbox), then acknowledges
    /// its deliveries; returns the messages of the results it created, for delivery.
    async fn commit(
        &self,
        inferred: Inferred,
        version: &str,
        late: &Late,
    ) -> Result<Vec<ResultMessage>> {
        let Inferred { batch, outputs } = inferred;
        let n = batch.len();
        let mut results = Vec::with_capacity(n);
        let mut deliveries = Vec::with_capacity(n);
        let mut messages = HashMap::with_capacity(n);
        for (r, output) in batch.into_iter().zip(outputs) {
            let story = output.story.clone();
            let timings = r.timings;
            messages.insert(
                r.item.job_id,
                ResultMessage {
                    result_id: 0,
                    post_id: r.item.post_id,
                    job_id: r.item.job_id,
                    source: r.item.source,
                    external_id: r.item.external_id,
                    model_version: version.to_string(),
                    output: output.clone(),
                },
            );
            results.push(NewResult {
                job_id: r.item.job_id,
                post_id: r.item.post_id,
                output,
                story,
                timings,
            });
            deliveries.push(r.delivery);
        }
        let owed = Owed {
            publish: self.queue.rabbit().is_some(),
            webhook: !self.cfg.worker.webhook_url.is_empty(),
        };
        let committed = match self.store.complete_with(version, &results, owed).await {
            Ok(c) => c,
            Err(e) => {
                // Nothing committed: give the jobs back untouched for another try.
                tracing::error!("committing {n} results: {e}");
                for d in deliveries {
                    let tag = d.tag();
                    let _ = d.requeue(&self.store).await;
                    late.settled([tag]);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Err(e);
            }
        };
        // The outcome is durable, and what it owes is in the outbox: acknowledge now.
        // One `multiple` ack, unless a late delivery with a lower tag is still unsettled.
        let tags: Vec<DeliveryTag> = deliveries.iter().filter_map(Delivery::tag).collect();
        let acked = if late.multiple_ack_ok(&tags) {
            Delivery::ack_all(deliveries).await
        } else {
            Delivery::ack_each(deliveries).await
        };
        late.settled(tags.into_iter().map(Some));
        if let Err(e) = acked {
            tracing::warn!("ack after commit failed (jobs will be redelivered and skipped): {e}");
        }
        metrics::jobs_succeeded(n as u64);
        // Only results this commit created are announced (one that existed was announced by
        // whoever created it).
        Ok(committed
            .iter()
            .filter_map(|c| {
                messages.remove(&c.job_id).map(|mut msg| {
                    msg.result_id = c.result_id;
                    msg
                })
            })
            .collect())
    }

    async fn fail(&self, d: Delivery, attempts: i64, error: &str, retryable: bool, late: &Late) {
        let (store, queue, cfg) = (&self.store, &self.queue, &self.cfg);
        fail_late(store, queue, cfg, late, d, attempts, error, retryable).await
    }
}

async fn fail_delivery(
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
struct Late(Arc<Mutex<BTreeSet<DeliveryTag>>>);

impl Late {
    fn hold(&self, tag: Option<DeliveryTag>) {
        if let Some(t) = tag {
            self.0.lock().expect("late set").insert(t);
        }
    }

    /// Call once the delivery is settled (acknowledged, requeued or failed).
    fn settled(&self, tags: impl IntoIterator<Item = Option<DeliveryTag>>) {
        let mut set = self.0.lock().expect("late set");
        for t in tags.into_iter().flatten() {
            set.remove(&t);
        }
    }

    /// Whether a `multiple` ack up to the highest of `tags` takes no unsettled late delivery
    /// outside `tags` (conservatively, any unsettled one from an earlier subscription counts).
    fn multiple_ack_ok(&self, tags: &[DeliveryTag]) -> bool {
        let Some(&max) = tags.iter().max() else {
            return true;
        };
        let set = self.0.lock().expect("late set");
        set.range(..max).all(|t| tags.contains(t))
    }
}

/// Settles a failed delivery, then forgets it if it was late.
#[allow(clippy::too_many_arguments)]
async fn fail_late(
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

/// A fetch (and decode) in flight: its job id and its outcome.
type Fetch = futures::future::BoxFuture<'static, (i64, Result<(ModelInput, Timings)>)>;

/// What the prepare stage holds between batches.
struct Prep<'a> {
    store: &'a Store,
    queue: &'a JobQueue,
    cfg: &'a Config,
    fetcher: &'a Fetcher,
    model: Arc<dyn ModelStep>,
    late: Late,
    permits: Arc<Semaphore>,
    /// Claimed jobs whose image is being fetched, by job id.
    fetching: HashMap<i64, (Delivery, WorkItem)>,
    /// The fetches in flight, this batch's and late ones alike.
    fetches: FuturesUnordered<Fetch>,
    /// Jobs with their image ready for the model, oldest first.
    ready: VecDeque<(Ready, ModelInput)>,
}

impl Prep<'_> {
    /// Starts fetching (and decoding) a claimed job's image, `fetch_concurrency` at a time.
    fn start(&mut self, d: Delivery, mut item: WorkItem) {
        let job_id = item.job_id;
        let src = std::mem::replace(&mut item.image, ImageSource::Bytes(Vec::new()));
        let fetcher = self.fetcher.clone();
        let cfg = Arc::new(self.cfg.fetch.clone());
        let permits = self.permits.clone();
        let model = self.model.clone();
        self.fetching.insert(job_id, (d, item));
        self.fetches.push(Box::pin(async move {
            let _permit = permits.acquire_owned().await;
            (job_id, load_image(&fetcher, &cfg, &src, model).await)
        }));
    }

    /// A fetch finished: its job is ready, or fails on its own.
    async fn landed(&mut self, job_id: i64, r: Result<(ModelInput, Timings)>) {
        let Some((d, item)) = self.fetching.remove(&job_id) else {
            return;
        };
        match r {
            Ok((image, timings)) => self.ready.push_back((
                Ready {
                    delivery: d,
                    item,
                    timings,
                },
                image,
            )),
            Err(e) => {
                let attempts = item.attempts;
                let (store, queue, cfg) = (self.store, self.queue, self.cfg);
                let late = self.late.clone();
                let retryable = e.is_retryable();
                fail_late(
                    store,
                    queue,
                    cfg,
                    &late,
                    d,
                    attempts,
                    &e.to_string(),
                    retryable,
                )
                .await
            }
        }
    }

    /// Whether any of `ids` is still being fetched.
    fn any_fetching(&self, ids: &[i64]) -> bool {
        ids.iter().any(|id| self.fetching.contains_key(id))
    }

    /// The next batch: up to `n` ready jobs, oldest first. What stays behind is late.
    fn take_batch(&mut self, n: usize) -> (Vec<Ready>, Vec<ModelInput>) {
        let n = n.min(self.ready.len());
        let (batch, images) = self.ready.drain(..n).unzip();
        for (r, _) in &self.ready {
            self.late.hold(r.delivery.tag());
        }
        for (d, _) in self.fetching.values() {
            self.late.hold(d.tag());
        }
        (batch, images)
    }

    /// Shutdown: cancels the fetches and gives back every job not handed to the model.
    async fn give_back(mut self) {
        self.fetches.clear();
        let held = self
            .fetching
            .drain()
            .map(|(_, (d, _))| d)
            .chain(self.ready.drain(..).map(|(r, _)| r.delivery));
        for d in held.collect::<Vec<_>>() {
            let tag = d.tag();
            if let Err(e) = d.requeue(self.store).await {
                tracing::warn!("giving back a job at shutdown: {e}");
            }
            self.late.settled([tag]);
        }
    }
}

/// Collects batches, fetches and decodes them, and hands them to the model stage.
///
/// A batch waits for its fetches at most `worker.fetch_wait_ms`: then it goes on with the
/// images that are ready. The late fetches go on (each has its own total deadline,
/// `fetch.timeout_ms`) and their jobs join a later batch, or fail on their own.
#[allow(clippy::too_many_arguments)]
async fn prepare_loop(
    store: &Store,
    queue: &JobQueue,
    cfg: &Config,
    fetcher: &Fetcher,
    model: Arc<dyn ModelStep>,
    late: Late,
    consumer: &mut JobConsumer,
    tx: mpsc::Sender<(Vec<Ready>, Vec<ModelInput>)>,
    shutdown: &mut watch::Receiver<bool>,
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
        if *shutdown.borrow() {
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
                    _ = shutdown.changed() => break None,
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

async fn load_image(
    fetcher: &Fetcher,
    cfg: &Arc<hashtale_core::config::FetchConfig>,
    src: &ImageSource,
    model: Arc<dyn ModelStep>,
) -> Result<(ModelInput, Timings)> {
    let t0 = Instant::now();
    let bytes = match src {
        ImageSource::Url(u) => fetcher.fetch_image(u).await?,
        ImageSource::Bytes(b) => b.clone(),
    };
    let fetch_ms = t0.elapsed().as_secs_f64() * 1e3;
    let limits = cfg.decode_limits();
    let t1 = Instant::now();
    // Decoded and brought to the model's input size off the model thread; the story stream
    // comes from the file's bytes, not its pixels.
    let input = tokio::task::spawn_blocking(move || {
        decode_image(&bytes, &limits).map(|img| ModelInput::new(model.prepare(img), &bytes))
    })
    .await
    .map_err(|e| Error::Other(format!("decode task: {e}")))??;
    Ok((
        input,
        Timings {
            fetch_ms,
            decode_ms: t1.elapsed().as_secs_f64() * 1e3,
            ..Default::default()
        },
    ))
}

/// HMAC-SHA256 of `body` with `secret`, hex: sent as `X-Hashtale-Signature: sha256=…`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The configured result webhook, with one HTTP client for all its calls.
pub struct Webhook {
    url: String,
    secret: hashtale_core::config::Secret,
    client: reqwest::Client,
}

impl Webhook {
    /// `None` when no webhook is configured.
    pub fn new(cfg: &Config) -> Result<Option<Self>> {
        if cfg.worker.webhook_url.is_empty() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Config(format!("webhook client: {e}")))?;
        Ok(Some(Self {
            url: cfg.worker.webhook_url.clone(),
            secret: cfg.worker.webhook_secret.clone(),
            client,
        }))
    }

    /// POSTs one signed message; `Ok` once the endpoint answered 2xx.
    pub async fn post(&self, m: &ResultMessage) -> Result<()> {
        let body = serde_json::to_vec(m)?;
        let sig = format!("sha256={}", sign(self.secret.expose(), &body));
        let resp = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-hashtale-signature", &sig)
            .body(body)
            .send()
            .await
            .map_err(|e| Error::Transient(format!("webhook: {e}")))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Error::Transient(format!(
                "webhook answered {}",
                resp.status()
            )))
        }
    }

    /// POSTs each message (stopping at the first failure: the endpoint is probably down and
    /// the rest stays owed); returns the result ids delivered.
    async fn post_all(&self, messages: &[ResultMessage]) -> Vec<i64> {
        let mut sent = Vec::with_capacity(messages.len());
        for m in messages {
            match self.post(m).await {
                Ok(()) => sent.push(m.result_id),
                Err(e) => {
                    tracing::warn!("{e} (result {} stays owed)", m.result_id);
                    break;
                }
            }
        }
        sent
    }
}

/// Deliveries confirmed but not yet recorded in the outbox. Recording them is batched (one
/// UPDATE per [`MARK_FLUSH_EVERY`] or [`MARK_FLUSH_AT`] results, not one per model batch):
/// a crash loses at most that window of records, and the sweep then sends those results again,
/// which at-least-once delivery allows.
#[derive(Default)]
struct Marks {
    published: Vec<i64>,
    webhook: Vec<i64>,
    since: Option<tokio::time::Instant>,
}

/// Longest a confirmed delivery waits to be recorded (well under [`SWEEP_GRACE`]).
const MARK_FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Most confirmed deliveries waiting to be recorded.
const MARK_FLUSH_AT: usize = 512;

impl Marks {
    fn add(&mut self, what: hashtale_store::Outbox, ids: impl IntoIterator<Item = i64>) {
        let list = match what {
            hashtale_store::Outbox::Publish => &mut self.published,
            hashtale_store::Outbox::Webhook => &mut self.webhook,
        };
        let before = list.len();
        list.extend(ids);
        if list.len() > before && self.since.is_none() {
            self.since = Some(tokio::time::Instant::now());
        }
    }

    fn len(&self) -> usize {
        self.published.len() + self.webhook.len()
    }

    /// When the oldest waiting record is due.
    fn due(&self) -> Option<tokio::time::Instant> {
        self.since.map(|t| t + MARK_FLUSH_EVERY)
    }

    async fn flush(&mut self, store: &Store) {
        for (what, ids) in [
            (
                hashtale_store::Outbox::Publish,
                std::mem::take(&mut self.published),
            ),
            (
                hashtale_store::Outbox::Webhook,
                std::mem::take(&mut self.webhook),
            ),
        ] {
            if let Err(e) = store.mark_delivered(what, &ids).await {
                // Left owed: the sweep sends these again.
                tracing::warn!("recording {} deliveries ({what:?}): {e}", ids.len());
            }
        }
        self.since = None;
    }
}

/// Delivers freshly committed results: publishes them (confirmed) and calls the webhook,
/// noting what succeeded in `marks`. Whatever fails stays owed for the sweep.
async fn deliver(
    queue: &JobQueue,
    webhook: &Option<Webhook>,
    messages: Vec<ResultMessage>,
    marks: &mut Marks,
) {
    if let Some(rabbit) = queue.rabbit() {
        match rabbit.publish_results(&messages).await {
            Ok(()) => marks.add(
                hashtale_store::Outbox::Publish,
                messages.iter().map(|m| m.result_id),
            ),
            Err(e) => tracing::warn!(
                "publishing {} result messages (the sweep will retry): {e}",
                messages.len()
            ),
        }
    }
    if let Some(hook) = webhook {
        let sent = hook.post_all(&messages).await;
        marks.add(hashtale_store::Outbox::Webhook, sent);
    }
}

/// What one sweep delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub published: usize,
    pub webhooks: usize,
}

/// Delivers what the outbox owes for results older than `grace`: result messages (RabbitMQ)
/// and webhook calls (when configured; calls owed longer than [`WEBHOOK_MAX_AGE`] are not
/// retried). Several workers may sweep at once, so a result can be sent twice: delivery is
/// at least once, and consumers deduplicate by `result_id`.
pub async fn sweep_outbox(
    store: &Store,
    queue: &JobQueue,
    webhook: &Option<Webhook>,
    grace: Duration,
) -> Result<Swept> {
    const PAGE: i64 = 500;
    let mut swept = Swept::default();
    let before = now_ms() - grace.as_millis() as i64;
    if let Some(rabbit) = queue.rabbit() {
        loop {
            let owed = store
                .owed_results(hashtale_store::Outbox::Publish, 0, before, PAGE)
                .await?;
            if owed.is_empty() {
                break;
            }
            rabbit.publish_results(&owed).await?;
            let ids: Vec<i64> = owed.iter().map(|m| m.result_id).collect();
            store
                .mark_delivered(hashtale_store::Outbox::Publish, &ids)
                .await?;
            swept.published += ids.len();
            if (owed.len() as i64) < PAGE {
                break;
            }
        }
    }
    if let Some(hook) = webhook {
        let after = now_ms() - WEBHOOK_MAX_AGE.as_millis() as i64;
        loop {
            let owed = store
                .owed_results(hashtale_store::Outbox::Webhook, after, before, PAGE)
                .await?;
            let sent = hook.post_all(&owed).await;
            store
                .mark_delivered(hashtale_store::Outbox::Webhook, &sent)
                .await?;
            swept.webhooks += sent.len();
            if sent.len() < owed.len() || (owed.len() as i64) < PAGE {
                break;
            }
        }
    }
    if swept != Swept::default() {
        tracing::info!(
            "outbox sweep: {} result messages, {} webhook calls delivered",
            swept.published,
            swept.webhooks
        );
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    #[test]
    fn webhook_signature_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
