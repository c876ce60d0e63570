//! The batching worker: takes jobs from the queue, fetches and decodes their images, runs the
//! models on dynamic batches, commits results, publishes them, then acknowledges.
//!
//! Three stages joined by one-slot channels — prepare (fetch, decode), model, commit — so
//! fetching and decoding the next batch overlaps the model run of this one, and the model does
//! not wait for the previous batch's commit. A batch closes at `batch_size` jobs or
//! `max_wait_ms` after its first job, whichever comes first. A bad image fails only its own
//! job (with the reason stored); the rest of the batch goes on.
pub mod model;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use hashtale_core::config::Config;
use hashtale_core::fetch::{decode_image, Fetcher};
use hashtale_core::metrics::{self, inc};
use hashtale_core::queue::{Delivery, JobConsumer, JobQueue};
use hashtale_core::store::{state, NewResult, WorkItem};
use hashtale_core::types::{ImageSource, ResultMessage, Timings};
use hashtale_core::{Error, Result, Store};
use image::DynamicImage;
use tokio::sync::{mpsc, watch};

pub use model::{ModelStep, NoopModelForOverheadBench};

/// A job whose image is decoded and ready for the model.
struct Ready {
    delivery: Delivery,
    item: WorkItem,
    image: DynamicImage,
    timings: Timings,
}

/// A batch with the model's answers, waiting for its commit.
struct Inferred {
    batch: Vec<Ready>,
    outputs: Vec<serde_json::Value>,
    model_s: f64,
}

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
        // Room for the batch filling, the one prepared, the one in the model, the one waiting
        // for its commit and the one being committed.
        let mut consumer = self.queue.consumer(batch_size * 5).await?;
        let fetcher = Fetcher::new(&self.cfg.fetch)?;
        let (tx, mut rx) = mpsc::channel::<Vec<Ready>>(1);
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
        let (done_tx, mut done_rx) = mpsc::channel::<Inferred>(1);
        let infer = async {
            while let Some(batch) = rx.recv().await {
                if let Some(inferred) = self.infer(batch).await {
                    if done_tx.send(inferred).await.is_err() {
                        break;
                    }
                }
            }
            drop(done_tx);
        };
        let commit = async {
            while let Some(inferred) = done_rx.recv().await {
                if let Err(e) = self.commit(inferred, &version).await {
                    tracing::error!("batch failed: {e}");
                }
            }
            Ok::<_, Error>(())
        };
        let (a, (), b) = tokio::join!(prep, infer, commit);
        // Only now, with the batch in hand finished, give back what was taken but not started.
        if let Err(e) = consumer.release(&self.store).await {
            tracing::warn!("releasing unstarted jobs: {e}");
        }
        a.and(b)
    }

    /// The model step on a blocking thread. If the model fails, every job of the batch gets a
    /// retry and `None` is returned.
    async fn infer(&self, batch: Vec<Ready>) -> Option<Inferred> {
        if batch.is_empty() {
            return None;
        }
        let m = metrics::global();
        m.batch_size.observe(batch.len() as f64);
        let images: Vec<DynamicImage> = batch.iter().map(|r| r.image.clone()).collect();
        let model = self.model.clone();
        let t0 = Instant::now();
        let outputs = tokio::task::spawn_blocking(move || model.run_batch(&images))
            .await
            .map_err(|e| Err::<Vec<serde_json::Value>, String>(format!("model task: {e}")))
            .unwrap_or_else(|e| e);
        let model_s = t0.elapsed().as_secs_f64();
        m.model_seconds.observe(model_s);
        let outputs = match outputs {
            Ok(o) if o.len() == batch.len() => o,
            other => {
                // The whole batch failed in the model: every job gets a retry.
                let e = match other {
                    Ok(o) => format!(
                        "model returned {} results for {} images",
                        o.len(),
                        batch.len()
                    ),
                    Err(e) => e,
                };
                for r in batch {
                    let attempts = r.item.attempts;
                    self.fail(r.delivery, attempts, &e, true).await;
                }
                return None;
            }
        };
        Some(Inferred {
            batch,
            outputs,
            model_s,
        })
    }

    /// Commit, publish, acknowledge.
    async fn commit(&self, inferred: Inferred, version: &str) -> Result<()> {
        let Inferred {
            batch,
            outputs,
            model_s,
        } = inferred;
        let m = metrics::global();
        let n = batch.len();
        let mut results = Vec::with_capacity(n);
        let mut messages = Vec::with_capacity(n);
        for (r, output) in batch.iter().zip(outputs) {
            let story = output
                .get("story")
                .and_then(|s| s.as_str())
                .map(str::to_string);
            let timings = Timings {
                model_batch_ms: model_s * 1e3,
                batch_size: n,
                ..r.timings
            };
            messages.push(ResultMessage {
                post_id: r.item.post_id,
                job_id: r.item.job_id,
                source: r.item.source.clone(),
                external_id: r.item.external_id.clone(),
                model_version: version.to_string(),
                output: output.clone(),
            });
            results.push(NewResult {
                job_id: r.item.job_id,
                post_id: r.item.post_id,
                output,
                story,
                timings,
            });
        }
        if let Err(e) = self.store.complete(version, &results).await {
            // Nothing committed: give the jobs back untouched for another try.
            tracing::error!("committing {n} results: {e}");
            for r in batch {
                let _ = r.delivery.requeue(&self.store).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Err(e);
        }
        if let Some(rabbit) = self.queue.rabbit() {
            if let Err(e) = rabbit.publish_results(&messages).await {
                tracing::warn!("publishing {n} result messages: {e}");
            }
        }
        if !self.cfg.worker.webhook_url.is_empty() {
            let url = self.cfg.worker.webhook_url.clone();
            let secret = self.cfg.worker.webhook_secret.clone();
            tokio::spawn(async move { post_webhooks(&url, &secret, &messages).await });
        }
        for r in batch {
            if let Err(e) = r.delivery.ack().await {
                tracing::warn!(
                    "ack after commit failed (job will be redelivered and skipped): {e}"
                );
            }
        }
        inc(&m.jobs_succeeded, n as u64);
        Ok(())
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
    tx: mpsc::Sender<Vec<Ready>>,
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
) -> Vec<Ready> {
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
    let mut todo = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        match by_id.remove(&d.msg.job_id) {
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
    for (d, item, r) in loaded {
        match r {
            Ok((image, timings)) => ready.push(Ready {
                delivery: d,
                item,
                image,
                timings,
            }),
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
    ready
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

async fn post_webhooks(url: &str, secret: &str, messages: &[ResultMessage]) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("webhook client: {e}");
            return;
        }
    };
    for m in messages {
        let Ok(body) = serde_json::to_vec(m) else {
            continue;
        };
        let sig = format!("sha256={}", sign(secret, &body));
        for attempt in 0..2 {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-hashtale-signature", &sig)
                .body(body.clone())
                .send()
                .await;
            match r {
                Ok(resp) if resp.status().is_success() => break,
                Ok(resp) => tracing::warn!("webhook answered {} (try {attempt})", resp.status()),
                Err(e) => tracing::warn!("webhook: {e} (try {attempt})"),
            }
        }
    }
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
