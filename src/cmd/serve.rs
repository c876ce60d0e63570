//! `hashtale serve`: the HTTP API.
use anyhow::Result;
use clap::Args;

use super::config::{open_queue, open_store, runtime, shutdown_signal, PipelineArgs};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Address to listen on (default: api.listen).
    #[arg(long)]
    pub listen: Option<String>,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let mut cfg = a.pipeline.load()?;
    if let Some(l) = a.listen {
        cfg.api.listen = l;
    }
    if cfg.api.token.is_empty() {
        tracing::warn!("api.token is empty: POST /v1/posts is refused until one is configured");
    }
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        let store = open_store(&cfg).await?;
        let queue = open_queue(&cfg, &store).await?;
        // Reconnects to the broker when it comes back and publishes what it could not take.
        tokio::spawn(queue.clone().maintain(store.clone()));
        let gauges = Some((store.clone(), queue.clone()));
        hashtale_api::serve_metrics(&cfg, "serve", gauges, shutdown.clone()).await?;
        let state = hashtale_api::AppState::new(store, queue, &cfg)?;
        // Requests in progress and the commits they started are waited for.
        hashtale_api::serve(state, &cfg, shutdown.child_token()).await?;
        Ok(())
    })
}
