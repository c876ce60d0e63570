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

/// Loads the real models once, on a blocking thread (they are heavy), as `worker.story_model`,
/// `worker.tag_model` and `worker.tag_source` say (empty: the shipped models, fused hashtags).
pub async fn load_model(cfg: &hashtale_core::config::WorkerConfig) -> Result<Arc<dyn ModelStep>> {
    let story_dir =
        (!cfg.story_model.is_empty()).then(|| std::path::PathBuf::from(&cfg.story_model));
    let story_tokenizer =
        (!cfg.story_tokenizer.is_empty()).then(|| std::path::PathBuf::from(&cfg.story_tokenizer));
    let tag_dir = (!cfg.tag_model.is_empty()).then(|| std::path::PathBuf::from(&cfg.tag_model));
    let source =
        hashtale_models::pipeline::TagSource::parse(&cfg.tag_source).with_context(|| {
            format!(
                "worker.tag_source `{}`: expected fused, decoder, concepts or probe",
                cfg.tag_source
            )
        })?;
    let m = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut m = hashtale_models::pipeline::Hashtale::load_default_with(tag_dir)?;
        m.options.source = source;
        if let Some(dir) = story_dir {
            let story = hashtale_models::story::StoryWriter::load(
                &dir,
                story_tokenizer.as_deref(),
                &hashtale_models::device::best_device(),
            )
            .with_context(|| format!("loading the story model from {}", dir.display()))?;
            m.set_story_model(story);
        }
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
        if let hashtale_core::queue::JobQueue::Local(_) = queue {
            store.requeue_running().await?;
        }
        let model = load_model(&cfg.worker).await?;
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
