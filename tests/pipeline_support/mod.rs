//! Helpers shared by the pipeline tests: isolated stores and queues on the machine's real
//! Postgres and RabbitMQ (a fresh schema and queue prefix per test), test images, and a tiny
//! HTTP server for feeds and image URLs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hashtale_core::config::{Config, QueueKind};
use hashtale_queue::JobQueue;
use hashtale_store::Store;
use hashtale_store::StoreOptions;
use hashtale_worker::ModelStep;

pub fn pg_url() -> String {
    std::env::var("HASHTALE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn amqp_url() -> String {
    std::env::var("HASHTALE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A name unique to this test run (schemas, queue prefixes).
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "ht_{name}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// A store and queue for one test, removed by `cleanup`.
pub struct Env {
    pub cfg: Config,
    pub store: Store,
    pub queue: JobQueue,
    pub schema: Option<String>,
    pub dir: tempfile::TempDir,
}

impl Env {
    /// The `hashtale` binary pointed at this environment's database schema and queue prefix,
    /// with the test's retry settings (so the clean-up knows every retry queue), small
    /// batches, and any free port for its metrics (two processes may overlap).
    pub fn hashtale(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hashtale"));
        cmd.args(args)
            .env("HASHTALE__DATABASE__URL", &self.cfg.database.url)
            .env("HASHTALE__QUEUE__KIND", "rabbitmq")
            .env("HASHTALE__QUEUE__AMQP_URL", &self.cfg.queue.amqp_url)
            .env("HASHTALE__QUEUE__PREFIX", &self.cfg.queue.prefix)
            .env(
                "HASHTALE__QUEUE__RETRY_BACKOFF_MS",
                self.cfg.queue.retry_backoff_ms.to_string(),
            )
            .env(
                "HASHTALE__QUEUE__MAX_ATTEMPTS",
                self.cfg.queue.max_attempts.to_string(),
            )
            .env("HASHTALE__WORKER__BATCH_SIZE", "8")
            .env("HASHTALE__WORKER__MAX_WAIT_MS", "20")
            .env("HASHTALE__METRICS__LISTEN", "127.0.0.1:0")
            .stdin(std::process::Stdio::null());
        if let Some(schema) = &self.schema {
            cmd.env("HASHTALE__DATABASE__SCHEMA", schema);
        }
        cmd
    }

    /// Postgres (own schema) + RabbitMQ (own prefix).
    pub async fn postgres_rabbit(name: &str) -> Env {
        Self::postgres_rabbit_at(name, &pg_url(), &amqp_url()).await
    }

    /// [`Env::postgres_rabbit`] on the given services (a proxy, an instance of the test's own).
    pub async fn postgres_rabbit_at(name: &str, pg_url: &str, amqp_url: &str) -> Env {
        let id = unique(name);
        let mut cfg = base_config();
        cfg.database.url = pg_url.to_string();
        cfg.database.schema = id.clone();
        cfg.queue.kind = QueueKind::Rabbitmq;
        cfg.queue.amqp_url = amqp_url.to_string();
        cfg.queue.prefix = id.clone();
        Self::open(cfg, Some(id)).await
    }

    /// Embedded: SQLite file + the in-process queue.
    pub async fn sqlite_local(name: &str) -> Env {
        let mut cfg = base_config();
        cfg.queue.kind = QueueKind::Local;
        cfg.queue.prefix = unique(name);
        let dir = tempfile::tempdir().unwrap();
        cfg.database.url = format!("sqlite://{}", dir.path().join("t.db").display());
        let mut env = Self::open(cfg, None).await;
        env.dir = dir;
        env
    }

    /// Postgres (own schema) + the in-process queue.
    pub async fn postgres_local(name: &str) -> Env {
        let id = unique(name);
        let mut cfg = base_config();
        cfg.database.url = pg_url();
        cfg.database.schema = id.clone();
        cfg.queue.kind = QueueKind::Local;
        Self::open(cfg, Some(id)).await
    }

    async fn open(cfg: Config, schema: Option<String>) -> Env {
        let store = Store::connect(
            &cfg.database.url,
            &StoreOptions {
                max_connections: 8,
                pg_schema: schema.clone(),
            },
        )
        .await
        .expect("connecting the test database");
        store.migrate().await.expect("migrating");
        let queue = JobQueue::connect(&cfg.queue, &store)
            .await
            .expect("connecting the queue");
        Env {
            cfg,
            store,
            queue,
            schema,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub async fn cleanup(self) {
        if let Some(r) = self.queue.rabbit() {
            let _ = r.delete_topology().await;
            r.close().await;
        }
        if let Some(s) = &self.schema {
            let _ = self.store.drop_pg_schema(s).await;
        }
        self.store.close().await;
    }
}

/// Small, fast settings for tests; local URLs allowed (the test serves its own feed).
pub fn base_config() -> Config {
    let mut cfg = Config::default();
    cfg.worker.batch_size = 8;
    cfg.worker.max_wait_ms = 20;
    cfg.queue.max_attempts = 3;
    cfg.queue.retry_backoff_ms = 50;
    cfg.fetch.allow_private = true;
    cfg.fetch.timeout_ms = 3000;
    cfg
}

/// A distinct little PNG per seed.
pub fn png(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(48, 40, |x, y| {
        image::Rgb([
            (x * 5 + seed * 7) as u8,
            (y * 6 + seed * 13) as u8,
            ((x ^ y) + seed) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A distinct little JPEG per seed.
pub fn jpeg(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(40, 48, |x, y| {
        image::Rgb([
            (x * 3 + seed) as u8,
            (y * 4 + seed * 3) as u8,
            (seed * 11) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// The real models, loaded once per test binary.
pub fn model() -> Arc<dyn ModelStep> {
    static M: OnceLock<Arc<hashtale_models::pipeline::Hashtale>> = OnceLock::new();
    M.get_or_init(|| {
        Arc::new(
            hashtale_models::pipeline::Hashtale::load_all(&hashtale_models::ModelPaths::shipped(
                std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/assets")),
            ))
            .expect("the real models must load for the pipeline tests"),
        )
    })
    .clone()
}

/// Files served by [`serve`]: path → (content type, body).
pub type Files = HashMap<String, (String, Vec<u8>)>;

/// Serves `files` on 127.0.0.1 (random port) until the runtime stops. GET only; 404 else.
pub async fn serve(files: Files) -> SocketAddr {
    use axum::extract::{Path, State};
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let files = Arc::new(files);
    let app = axum::Router::new()
        .route(
            "/{*path}",
            axum::routing::get(
                |State(f): State<Arc<Files>>, Path(p): Path<String>| async move {
                    match f.get(&p) {
                        Some((ct, body)) => {
                            ([(header::CONTENT_TYPE, ct.clone())], body.clone()).into_response()
                        }
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .with_state(files);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// An RSS feed whose items link images at `base` (`img/N.png`).
pub fn rss(base: &str, ids: &[u32]) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>test feed</title>"#,
    );
    for i in ids {
        s.push_str(&format!(
            r#"<item><guid>item-{i}</guid><title>Photo {i}</title><enclosure url="{base}/img/{i}.png" type="image/png" length="1"/></item>"#
        ));
    }
    s.push_str("</channel></rss>");
    s
}

/// Waits until `f` returns true, panicking after `secs`.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Number of jobs in `state`.
pub async fn jobs_in(store: &Store, state: hashtale_types::JobState) -> i64 {
    store
        .job_counts()
        .await
        .unwrap()
        .into_iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| n)
}

/// The `host:port` of a service URL (`scheme://[user[:password]@]host:port/…`).
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_string()
}

/// A TCP proxy in front of a service that a test can cut (every connection dropped, new ones
/// closed at once) and restore: an outage of the shared broker or database as its clients see
/// it, without touching the service.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    /// Forwards 127.0.0.1:random to `target` (`host:port`).
    pub async fn start(target: String) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(h.abort_handle());
            }
        });
        Proxy { addr, up, conns }
    }

    /// `url` with its `host:port` replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        url.replacen(&host_port(url), &self.addr.to_string(), 1)
    }

    /// The outage begins: open connections are dropped, new ones refused.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    /// The service is back.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
