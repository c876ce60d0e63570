//! The model stage: runs a batch on the model's blocking thread, falling back to one image
//! at a time when the batch fails.

use std::sync::Arc;
use std::time::Instant;

use hashtale_core::metrics;
use hashtale_models::pipeline::ModelInput;
use hashtale_queue::Delivery;

use crate::batcher::{fail_late, Late};
use crate::{Inferred, Ready, Worker};

impl Worker {
    /// The model step on a blocking thread. When the batch fails (an error, a panic, a wrong
    /// result count), it is run again one image at a time, so only the image that fails alone
    /// fails: that one is parked with its reason (it failed twice, in the batch and alone); the
    /// others go on. A failing batch of one image gets a retry (the cause may be passing).
    pub(crate) async fn infer(
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

    pub(crate) async fn fail(
        &self,
        d: Delivery,
        attempts: i64,
        error: &str,
        retryable: bool,
        late: &Late,
    ) {
        let (store, queue, cfg) = (&self.store, &self.queue, &self.cfg);
        fail_late(store, queue, cfg, late, d, attempts, error, retryable).await
    }
}
