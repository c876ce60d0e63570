//! `hashtale run`: everything in one process on a laptop — embedded SQLite, the in-process
//! queue, the scheduler (watching `assets/samples/` unless told otherwise), the worker and the
//! HTTP API — with no configuration. Prints each result as it lands.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use hashtale_core::config::QueueKind;
use hashtale_queue::JobQueue;
use hashtale_scheduler::{dir, feed, Ingestor};
use hashtale_store::ResultRow;
use hashtale_store::Store;
use hashtale_types::JobState;
use hashtale_worker::Worker;
use rand::Rng;

use super::config::{drain, open_store, runtime, shutdown_signal, PipelineArgs};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Folder to watch (repeatable; default: the shipped sample photos, assets/samples).
    #[arg(long)]
    pub watch: Vec<PathBuf>,
    /// RSS/Atom/JSON Feed URL to poll (repeatable).
    #[arg(long)]
    pub feed: Vec<String>,
    /// SQLite file (default: hashtale.db in the current folder).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// API address (default: 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<String>,
    /// Process what is there now, print the results and exit (no API, no watching).
    #[arg(long)]
    pub once: bool,
}

pub fn run(a: RunArgs) -> Result<()> {
    let mut cfg = a.pipeline.load()?;
    cfg.queue.kind = QueueKind::Local;
    cfg.scheduler.ingest = false;
    if let Some(db) = &a.db {
        cfg.database.url = format!("sqlite://{}", db.display());
    }
    if let Some(l) = a.listen {
        cfg.api.listen = l;
    }
    cfg.scheduler.watch_dirs.extend(a.watch);
    cfg.scheduler.feeds.extend(a.feed);
    if cfg.scheduler.watch_dirs.is_empty() && cfg.scheduler.feeds.is_empty() {
        let samples = super::models::samples_dir(&cfg.models);
        cfg.scheduler.watch_dirs.push(samples);
    }
    let generated_token = cfg.api.token.is_empty();
    if generated_token {
        let bytes: [u8; 16] = rand::thread_rng().gen();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        cfg.api.token = token.into();
    }
    runtime()?.block_on(async move {
        let shutdown = shutdown_signal();
        // The sources and the API run on `tracker` and stop on `cancel`; at the end the process
        // waits for what they have in hand.
        let (tracker, cancel) = (tokio_util::task::TaskTracker::new(), shutdown.child_token());
        // Bind before anything else: a taken port is an error, not a log line after a banner.
        let listener = if a.once {
            None
        } else {
            Some(
                hashtale_api::bind(&cfg)
                    .await
                    .context("starting the API (choose another port with --listen)")?,
            )
        };
        let store = open_store(&cfg).await?;
        let local = hashtale_queue::LocalQueue::new(store.clone());
        let requeued = local.requeue_running().await?;
        if requeued > 0 {
            tracing::info!("resuming {requeued} unfinished jobs");
        }
        let queue = JobQueue::Local(local);
        if !a.once {
            let gauges = Some((store.clone(), queue.clone()));
            hashtale_api::serve_metrics(&cfg, "run", gauges, shutdown.clone()).await?;
        }
        let ing = Ingestor::new(store.clone(), queue.clone(), &cfg.fetch)?;
        eprintln!("loading the models…");
        let model = super::worker::load_model(&cfg.models).await?;
        let stop_worker = tokio_util::sync::CancellationToken::new();
        let worker = tokio::spawn(
            Worker {
                store: store.clone(),
                queue: queue.clone(),
                cfg: cfg.clone(),
                model,
            }
            .run(stop_worker.clone()),
        );
        let mut printed = 0i64;
        if a.once {
            let fetcher = ing.fetcher();
            for d in &cfg.scheduler.watch_dirs {
                // Files are read on blocking threads, not the runtime's.
                let d = d.clone();
                let (root, files) = tokio::task::spawn_blocking(move || -> Result<_> {
                    let root = std::fs::canonicalize(&d)?;
                    let files = dir::scan(&root)?;
                    Ok((root, files))
                })
                .await??;
                for f in files {
                    let (r, max) = (root.clone(), cfg.fetch.max_bytes);
                    let read = tokio::task::spawn_blocking(move || {
                        let post = dir::post_for(&r, &f, max);
                        (f, post)
                    })
                    .await?;
                    match read {
                        (_, Ok(p)) => {
                            ing.ingest(&p).await?;
                        }
                        (f, Err(e)) => tracing::warn!("skipping {}: {e}", f.display()),
                    }
                }
            }
            for f in &cfg.scheduler.feeds {
                feed::poll_once(&ing, fetcher, f).await?;
            }
            loop {
                printed = print_new(&store, printed).await?;
                if active_jobs(&store).await? == 0 || shutdown.is_cancelled() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            printed = print_new(&store, printed).await?;
        } else {
            hashtale_scheduler::spawn_sources(&ing, &cfg, &tracker, &cancel)?;
            let state = hashtale_api::AppState::new(store.clone(), queue.clone(), &cfg)?;
            let listener = listener.expect("bound above unless --once");
            let api_addr = listener.local_addr()?;
            let api_cfg = cfg.clone();
            let api_cancel = cancel.clone();
            tracker.spawn(async move {
                if let Err(e) = hashtale_api::serve_on(listener, state, &api_cfg, api_cancel).await
                {
                    tracing::error!("API: {e}");
                }
            });
            eprintln!(
                "API: http://{api_addr}/v1/results  (OpenAPI: /openapi.json; write token: {}{})",
                cfg.api.token.expose(),
                if generated_token {
                    ", generated for this run"
                } else {
                    ""
                }
            );
            eprintln!(
                "ratings: invite raters with `hashtale raters add NAME`; admin at http://{api_addr}/admin/login ({})",
                if cfg.ratings.admin_token.is_empty() {
                    "sign in with the write token"
                } else {
                    "sign in with ratings.admin_token"
                }
            );
            eprintln!(
                "watching {}; Ctrl-C to stop",
                cfg.scheduler
                    .watch_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            loop {
                printed = print_new(&store, printed).await?;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
        // Sources and API first (what they commit still reaches the worker's queue), then the
        // worker finishes the batch in hand.
        cancel.cancel();
        drain(&tracker, "the sources and the API").await;
        stop_worker.cancel();
        worker.await??;
        print_new(&store, printed).await?;
        print_failures(&store).await?;
        store.close().await;
        Ok(())
    })
}

/// Jobs not yet done or failed.
async fn active_jobs(store: &Store) -> Result<i64> {
    Ok(store
        .job_counts()
        .await?
        .iter()
        .filter(|(s, _)| !s.is_final())
        .map(|(_, n)| n)
        .sum())
}

fn describe(r: &ResultRow) -> String {
    let tags: Vec<String> = r
        .output
        .hashtags
        .iter()
        .map(|t| format!("#{} ({:.2})", t.tag.trim_start_matches('#'), t.score))
        .collect();
    let mut s = tags.join(" ");
    let suggested: Vec<String> = r
        .output
        .instagram
        .iter()
        .map(|t| format!("#{}", t.tag.trim_start_matches('#')))
        .collect();
    if !suggested.is_empty() {
        s.push_str(&format!("\n    Instagram: {}", suggested.join(" ")));
    }
    if let Some(story) = &r.story {
        s.push_str(&format!("\n    {story}"));
    }
    s
}

/// Prints results with id above `after`; returns the last id printed.
async fn print_new(store: &Store, mut after: i64) -> Result<i64> {
    loop {
        let page = store.results_page(0, after, 100).await?;
        if page.is_empty() {
            return Ok(after);
        }
        for r in &page {
            let name = store
                .post(r.post_id)
                .await?
                .map(|p| p.external_id)
                .unwrap_or_default();
            println!("{name}: {}", describe(r));
            after = r.id;
        }
    }
}

async fn print_failures(store: &Store) -> Result<()> {
    let failed = store
        .job_counts()
        .await?
        .into_iter()
        .find(|(s, _)| *s == JobState::Failed)
        .map_or(0, |(_, n)| n);
    if failed > 0 {
        eprintln!("{failed} job(s) failed; see GET /v1/jobs/{{id}} for the reasons");
    }
    Ok(())
}
