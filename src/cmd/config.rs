//! `hashtale config show`, plus what every pipeline subcommand shares: the config flags,
//! opening the store and queue, and the shutdown signal.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hashtale_core::config::{Config, QueueKind};
use hashtale_queue::JobQueue;
use hashtale_store::Store;
use hashtale_store::StoreOptions;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Flags accepted by every pipeline subcommand; they override the file and environment.
#[derive(Args, Debug, Clone, Default)]
pub struct PipelineArgs {
    /// TOML config file (keys as in docs/pipeline.md); `HASHTALE__SECTION__KEY` variables
    /// override it.
    #[arg(long, short = 'c', env = "HASHTALE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database URL: postgres://… or sqlite://FILE.
    #[arg(long)]
    pub database_url: Option<String>,
    /// RabbitMQ URL.
    #[arg(long)]
    pub amqp_url: Option<String>,
    /// Queue: rabbitmq or local (in-process, backed by the jobs table).
    #[arg(long)]
    pub queue: Option<String>,
    /// Prefix of exchange and queue names.
    #[arg(long)]
    pub queue_prefix: Option<String>,
    /// Address of this process's Prometheus /metrics endpoint, or `off` (default:
    /// metrics.listen, else run 127.0.0.1:9100, worker :9101, scheduler :9102, serve :9103).
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

impl PipelineArgs {
    /// Defaults ← file ← environment ← these flags.
    pub fn load(&self) -> Result<Config> {
        let mut cfg = Config::load(self.config.as_deref())?;
        if let Some(u) = &self.database_url {
            cfg.database.url = u.clone();
        }
        if let Some(u) = &self.amqp_url {
            cfg.queue.amqp_url = u.clone();
        }
        if let Some(q) = &self.queue {
            cfg.queue.kind = match q.as_str() {
                "rabbitmq" => QueueKind::Rabbitmq,
                "local" => QueueKind::Local,
                other => anyhow::bail!("--queue must be rabbitmq or local, not {other}"),
            };
        }
        if let Some(p) = &self.queue_prefix {
            cfg.queue.prefix = p.clone();
        }
        if let Some(m) = &self.metrics_listen {
            cfg.metrics.listen = m.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Opens the store (migrating it if configured to).
pub async fn open_store(cfg: &Config) -> Result<Store> {
    let store = Store::connect(
        &cfg.database.url,
        &StoreOptions {
            max_connections: cfg.database.max_connections,
            pg_schema: (!cfg.database.schema.is_empty()).then(|| cfg.database.schema.clone()),
        },
    )
    .await
    .with_context(|| {
        format!(
            "opening {}",
            hashtale_core::config::mask_url_password(&cfg.database.url)
        )
    })?;
    if cfg.database.migrate_on_start {
        store.migrate().await.context("migrating the database")?;
    }
    Ok(store)
}

/// Connects the configured queue.
pub async fn open_queue(cfg: &Config, store: &Store) -> Result<JobQueue> {
    JobQueue::connect(&cfg.queue, store).await.with_context(|| {
        format!(
            "connecting the {:?} queue at {}",
            cfg.queue.kind,
            hashtale_core::config::mask_url_password(&cfg.queue.amqp_url)
        )
    })
}

/// A token cancelled on SIGTERM or Ctrl-C (graceful shutdown: stop taking work, finish what is
/// in hand). A second signal exits at once.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        for i in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if i == 0 {
                tracing::info!(
                    "shutting down: finishing the work in hand (signal again to exit now)"
                );
                cancel.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
    token
}

/// Longest a stopping process waits for its tasks' work in hand.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Closes `tracker` and waits (at most [`DRAIN_TIMEOUT`]) for its tasks to finish.
pub async fn drain(tracker: &TaskTracker, what: &str) {
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{what} did not finish within {DRAIN_TIMEOUT:?}; stopping anyway ({} tasks left)",
            tracker.len()
        );
    }
}

/// A multi-threaded tokio runtime for the pipeline subcommands.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Print the effective configuration (defaults, file, environment, flags), secrets masked.
    Show(PipelineArgs),
}

pub fn run(cmd: ConfigCmd) -> Result<()> {
    match cmd {
        ConfigCmd::Show(a) => {
            print!("{}", a.load()?.to_masked_toml()?);
            Ok(())
        }
    }
}
