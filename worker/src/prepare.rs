//! The prepare stage's state: fetching and decoding each job's image, `fetch_concurrency`
//! at a time, and holding the ready ones until a batch takes them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::FuturesUnordered;
use hashtale_core::config::Config;
use hashtale_core::{Error, Result};
use hashtale_fetch::{decode_image, Fetcher};
use hashtale_models::pipeline::ModelInput;
use hashtale_queue::{Delivery, JobQueue};
use hashtale_store::{Store, WorkItem};
use hashtale_types::{ImageSource, Timings};
use tokio::sync::Semaphore;

use crate::batcher::{fail_late, Late};
use crate::{ModelStep, Ready};

/// A fetch (and decode) in flight: its job id and its outcome.
pub(crate) type Fetch = futures::future::BoxFuture<'static, (i64, Result<(ModelInput, Timings)>)>;

/// What the prepare stage holds between batches.
pub(crate) struct Prep<'a> {
    pub(crate) store: &'a Store,
    pub(crate) queue: &'a JobQueue,
    pub(crate) cfg: &'a Config,
    pub(crate) fetcher: &'a Fetcher,
    pub(crate) model: Arc<dyn ModelStep>,
    pub(crate) late: Late,
    pub(crate) permits: Arc<Semaphore>,
    /// Claimed jobs whose image is being fetched, by job id.
    pub(crate) fetching: HashMap<i64, (Delivery, WorkItem)>,
    /// The fetches in flight, this batch's and late ones alike.
    pub(crate) fetches: FuturesUnordered<Fetch>,
    /// Jobs with their image ready for the model, oldest first.
    pub(crate) ready: VecDeque<(Ready, ModelInput)>,
}

impl Prep<'_> {
    /// Starts fetching (and decoding) a claimed job's image, `fetch_concurrency` at a time.
    pub(crate) fn start(&mut self, d: Delivery, mut item: WorkItem) {
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
    pub(crate) async fn landed(&mut self, job_id: i64, r: Result<(ModelInput, Timings)>) {
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
    pub(crate) fn any_fetching(&self, ids: &[i64]) -> bool {
        ids.iter().any(|id| self.fetching.contains_key(id))
    }

    /// The next batch: up to `n` ready jobs, oldest first. What stays behind is late.
    pub(crate) fn take_batch(&mut self, n: usize) -> (Vec<Ready>, Vec<ModelInput>) {
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
    pub(crate) async fn give_back(mut self) {
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
