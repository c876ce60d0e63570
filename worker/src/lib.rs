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
pub mod model;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use hashtale_core::config::Config;
use hashtale_core::fetch::{decode_image, Fetcher};
use hashtale_core::metrics::{self, inc};
use hashtale_core::queue::{Delivery, JobConsumer, JobQueue};
use hashtale_core::store::{self, state, NewResult, Owed, WorkItem};
use hashtale_core::types::now_ms;
use hashtale_core::types::{ImageSource, ResultMessage, Timings};
use hashtale_core::{Error, Result, Store};
use image::DynamicImage;
use tokio::sync::{mpsc, watch};

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
    outputs: Vec<serde_json::Value>,
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
        // Room for the batch filling, the one being prepared, the one prepared, the one in the
        // model, the two waiting for their commit and the one being committed, plus one spare
        // so a batch never closes early only because the prefetch ran out.
        let mut consumer = self.queue.consumer(batch_size * 8).await?;
        let fetcher = Fetcher::new(&self.cfg.fetch)?;
        let webhook = Webhook::new(&self.cfg)?;
        let (tx, mut rx) = mpsc::channel::<(Vec<Ready>, Vec<DynamicImage>)>(1);
        let version = self.model.version();
        tracing::info!(
            "worker started: model {version}, batch_size {batch_size}, max_wait {max_wait:?}, store {}",
            self.store.backend()
        );

        let prep = prepare_loop(
            &self.store,
            &self.queue,
            &self.cfg,
            &fetcher,
            &mut consumer,
            tx,
            &mut shutdown,
            batch_size,
            max_wait,
        );
        // The model runs batch after batch while the previous one is committed.
        let (done_tx, mut done_rx) = mpsc::channel::<Inferred>(2);
        let infer = async {
            while let Some((batch, images)) = rx.recv().await {
                if let Some(inferred) = self.infer(batch, images).await {
                    if done_tx.send(inferred).await.is_err() {
                        break;
                    }
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
                match self.commit(inferred, &version).await {
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
    async fn infer(&self, mut batch: Vec<Ready>, images: Vec<DynamicImage>) -> Option<Inferred> {
        if batch.is_empty() {
            return None;
        }
        let m = metrics::global();
        m.batch_size.observe(batch.len() as f64);
        let images = Arc::new(images);
        let t0 = Instant::now();
        let outputs = self.run_model(images.clone(), None).await;
        let model_s = t0.elapsed().as_secs_f64();
        m.model_seconds.observe(model_s);
        let outputs = match outputs {
            Ok(o) => o,
            Err(e) if batch.len() == 1 => {
                let r = batch.pop().expect("one job");
                let attempts = r.item.attempts;
                self.fail(r.delivery, attempts, &e, true).await;
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
                            self.fail(r.delivery, attempts, &reason, false).await;
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
        images: Arc<Vec<DynamicImage>>,
        only: Option<usize>,
    ) -> std::result::Result<Vec<serde_json::Value>, String> {
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
    async fn commit(&self, inferred: Inferred, version: &str) -> Result<Vec<ResultMessage>> {
        let Inferred { batch, outputs } = inferred;
        let m = metrics::global();
        let n = batch.len();
        let mut results = Vec::with_capacity(n);
        let mut deliveries = Vec::with_capacity(n);
        let mut messages = HashMap::with_capacity(n);
        for (r, output) in batch.into_iter().zip(outputs) {
            let story = output
                .get("story")
                .and_then(|s| s.as_str())
                .map(str::to_string);
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
                    let _ = d.requeue(&self.store).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Err(e);
            }
        };
        // The outcome is durable, and what it owes is in the outbox: acknowledge now.
        if let Err(e) = Delivery::ack_all(deliveries).await {
            tracing::warn!("ack after commit failed (jobs will be redelivered and skipped): {e}");
        }
        inc(&m.jobs_succeeded, n as u64);
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

    async fn fail(&self, d: Delivery, attempts: i64, error: &str, retryable: bool) {
        fail_delivery(
            &self.store,
            &self.queue,
            &self.cfg,
            d,
            attempts,
            error,
            retryable,
        )
        .await
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
    let m = metrics::global();
    let job_id = d.msg.job_id;
    let will_retry = retryable && attempts < cfg.queue.max_attempts as i64;
    if will_retry {
        inc(&m.jobs_retried, 1);
        tracing::info!("job {job_id} attempt {attempts} failed, will retry: {error}");
    } else {
        inc(&m.jobs_failed, 1);
        tracing::warn!("job {job_id} failed after {attempts} attempt(s): {error}");
    }
    if let Err(e) = queue
        .fail(store, &cfg.queue, d, attempts, error, retryable)
        .await
    {
        tracing::error!("recording failure of job {job_id}: {e}");
    }
}

/// A delivery with its row and its decoded image (or why it could not be had).
type Loaded = (Delivery, WorkItem, Result<(DynamicImage, Timings)>);

/// Collects batches, fetches and decodes them, and hands them to the model stage.
#[allow(clippy::too_many_arguments)]
async fn prepare_loop(
    store: &Store,
    queue: &JobQueue,
    cfg: &Config,
    fetcher: &Fetcher,
    consumer: &mut JobConsumer,
    tx: mpsc::Sender<(Vec<Ready>, Vec<DynamicImage>)>,
    shutdown: &mut watch::Receiver<bool>,
    batch_size: usize,
    max_wait: Duration,
) -> Result<()> {
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        // Wait for the first job of a batch (or shutdown)…
        let first = tokio::select! {
            d = consumer.next(None) => d,
            _ = shutdown.changed() => return Ok(()),
        };
        let first = match first {
            Ok(Some(d)) => d,
            // The broker closed the consumer or the connection is gone: exit with an error so
            // the supervisor restarts the worker (nothing is lost: unacked jobs are redelivered).
            Ok(None) => return Err(Error::Transient("the job consumer was closed".into())),
            Err(e) if !queue.is_ready() => return Err(e),
            Err(e) => {
                tracing::error!("receiving jobs: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // …then take more until the batch is full or max_wait has passed.
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut deliveries = vec![first];
        while deliveries.len() < batch_size {
            match consumer.next(Some(deadline)).await {
                Ok(Some(d)) => deliveries.push(d),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("receiving jobs: {e}");
                    break;
                }
            }
        }
        let ready = prepare(store, queue, cfg, fetcher, deliveries).await;
        if tx.send(ready).await.is_err() {
            return Ok(());
        }
    }
}

/// Claims the rows, skips jobs already done, fetches and decodes the rest; failures are
/// recorded here and do not reach the model.
async fn prepare(
    store: &Store,
    queue: &JobQueue,
    cfg: &Config,
    fetcher: &Fetcher,
    deliveries: Vec<Delivery>,
) -> (Vec<Ready>, Vec<DynamicImage>) {
    let ids: Vec<i64> = deliveries.iter().map(|d| d.msg.job_id).collect();
    let items = match store.start_jobs(&ids).await {
        Ok(items) => items,
        Err(e) => {
            tracing::error!("starting jobs: {e}");
            for d in deliveries {
                let _ = d.requeue(store).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            return (Vec::new(), Vec::new());
        }
    };
    let mut by_id: HashMap<i64, WorkItem> = items.into_iter().map(|i| (i.job_id, i)).collect();
    let mut todo = Vec::with_capacity(deliveries.len());
    let max_attempts = cfg.queue.max_attempts as i64;
    for d in deliveries {
        match by_id.remove(&d.msg.job_id) {
            Some(item) if item.state == state::RUNNING && item.attempts > max_attempts => {
                // Earlier attempts ended without an outcome (the worker died, e.g. on this very
                // input): stop here instead of crashing worker after worker forever.
                let attempts = item.attempts;
                let e = format!(
                    "gave up: delivered for attempt {attempts} of at most {max_attempts} \
                     (earlier attempts ended without an outcome, e.g. a worker crash)"
                );
                fail_delivery(store, queue, cfg, d, attempts, &e, false).await;
            }
            Some(item) if item.state == state::RUNNING => todo.push((d, item)),
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
    let fetch_cfg = Arc::new(cfg.fetch.clone());
    let loaded: Vec<Loaded> = stream::iter(todo)
        .map(|(d, item)| {
            let fetch_cfg = fetch_cfg.clone();
            async move {
                let r = load_image(fetcher, &fetch_cfg, &item.image).await;
                (d, item, r)
            }
        })
        .buffered(cfg.worker.fetch_concurrency.max(1))
        .collect()
        .await;
    let mut ready = Vec::with_capacity(loaded.len());
    let mut images = Vec::with_capacity(loaded.len());
    for (d, item, r) in loaded {
        match r {
            Ok((image, timings)) => {
                images.push(image);
                ready.push(Ready {
                    delivery: d,
                    item,
                    timings,
                })
            }
            Err(e) => {
                let attempts = item.attempts;
                fail_delivery(
                    store,
                    queue,
                    cfg,
                    d,
                    attempts,
                    &e.to_string(),
                    e.is_retryable(),
                )
                .await
            }
        }
    }
    (ready, images)
}

async fn load_image(
    fetcher: &Fetcher,
    cfg: &Arc<hashtale_core::config::FetchConfig>,
    src: &ImageSource,
) -> Result<(DynamicImage, Timings)> {
    let t0 = Instant::now();
    let bytes = match src {
        ImageSource::Url(u) => fetcher.fetch_image(u).await?,
        ImageSource::Bytes(b) => b.clone(),
    };
    let fetch_ms = t0.elapsed().as_secs_f64() * 1e3;
    if bytes.len() as u64 > cfg.max_bytes {
        return Err(Error::BadInput(format!(
            "image larger than {} bytes",
            cfg.max_bytes
        )));
    }
    let cfg = cfg.clone();
    let t1 = Instant::now();
    let image = tokio::task::spawn_blocking(move || decode_image(&bytes, &cfg))
        .await
        .map_err(|e| Error::Other(format!("decode task: {e}")))??;
    Ok((
        image,
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
    secret: String,
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
        let sig = format!("sha256={}", sign(&self.secret, &body));
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
    fn add(&mut self, what: store::Outbox, ids: impl IntoIterator<Item = i64>) {
        let list = match what {
            store::Outbox::Publish => &mut self.published,
            store::Outbox::Webhook => &mut self.webhook,
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
            (store::Outbox::Publish, std::mem::take(&mut self.published)),
            (store::Outbox::Webhook, std::mem::take(&mut self.webhook)),
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
            Ok(()) => marks.add(store::Outbox::Publish, messages.iter().map(|m| m.result_id)),
            Err(e) => tracing::warn!(
                "publishing {} result messages (the sweep will retry): {e}",
                messages.len()
            ),
        }
    }
    if let Some(hook) = webhook {
        let sent = hook.post_all(&messages).await;
        marks.add(store::Outbox::Webhook, sent);
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
                .owed_results(store::Outbox::Publish, 0, before, PAGE)
                .await?;
            if owed.is_empty() {
                break;
            }
            rabbit.publish_results(&owed).await?;
            let ids: Vec<i64> = owed.iter().map(|m| m.result_id).collect();
            store.mark_delivered(store::Outbox::Publish, &ids).await?;
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
                .owed_results(store::Outbox::Webhook, after, before, PAGE)
                .await?;
            let sent = hook.post_all(&owed).await;
            store.mark_delivered(store::Outbox::Webhook, &sent).await?;
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
