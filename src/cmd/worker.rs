//! `hashtale worker`: runs the models on batches of queued jobs.
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use hashtale_worker::{ModelStep, Worker};

use super::config::{open_queue, open_store, runtime, shutdown_signal, PipelineArgs};

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Most images per model batch (default: worker.batch_size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Longest wait for a batch to fill, in ms (default: worker.max_wait_ms).
    #[arg(long)]
    pub max_wait_ms: Option<u64>,
}

/// Loads the real models once, on a blocking thread (they are heavy), from the paths the
/// `[models]` section resolves to, ranking hashtags with `models.tag_source`.
pub async fn load_model(cfg: &hashtale_core::config::ModelsConfig) -> Result<Arc<dyn ModelStep>> {
    let paths = super::models::resolve(cfg);
    let source =
        hashtale_models::pipeline::TagSource::parse(&cfg.tag_source).with_context(|| {
            format!(
                "models.tag_source `{}`: expected fused, decoder, concepts or probe",
                cfg.tag_source
            )
        })?;
    let m = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut m = hashtale_models::pipeline::Hashtale::load_all(&paths).with_context(|| {
            format!(
                "from {} (hashtags), {} (story), {} (encoder)",
                paths.tag_model.display(),
                paths.story_model.display(),
                paths.encoder_dir.display()
            )
        })?;
        m.options.source = source;
        Ok(m)
    })
    .await?
    .context("loading the models")?;
    Ok(Arc::new(m))
}

pub fn run(a: WorkerArgs) -> Result<()> {
    let mut cfg = a.pipeline.load()?;
    if let Some(b) = a.batch_size {
        cfg.worker.batch_size = b.max(1);
    }
    if let Some(w) = a.max_wait_ms {
        cfg.worker.max_wait_ms = w;
    }
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        hashtale_api::serve_metrics(&cfg, "worker", None, shutdown.clone()).await?;
        let store = open_store(&cfg).await?;
        let queue = open_queue(&cfg, &store).await?;
        if let hashtale_queue::JobQueue::Local(local) = &queue {
            local.requeue_running().await?;
        }
        let model = load_model(&cfg.models).await?;
        Worker {
            store: store.clone(),
            queue,
            cfg,
            model,
        }
        .run(shutdown)
        .await?;
        store.close().await;
        tracing::info!("worker stopped");
        Ok(())
    })
}
