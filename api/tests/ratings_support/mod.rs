//! Shared by the rating tests: a store on the machine's real Postgres (own schema) or a temporary
//! SQLite file, results inserted through the store as the worker would, and small PNGs.
#![allow(dead_code)]

use std::io::Cursor;

use hashtale_core::config::{Config, QueueKind};
use hashtale_queue::JobQueue;
use hashtale_store::Store;
use hashtale_store::{NewResult, StoreOptions};
use hashtale_types::{ImageSource, NewPost, Timings};

pub fn pg_url() -> String {
    std::env::var("HASHTALE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A name unique to this test run (Postgres schemas).
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

/// A migrated store for one test, removed by `cleanup`.
pub struct Env {
    pub cfg: Config,
    pub store: Store,
    pub schema: Option<String>,
    _dir: tempfile::TempDir,
}

impl Env {
    pub async fn postgres(name: &str) -> Env {
        let schema = unique(name);
        let mut cfg = Config::default();
        cfg.database.url = pg_url();
        cfg.database.schema = schema.clone();
        Self::open(cfg, Some(schema), tempfile::tempdir().unwrap()).await
    }

    pub async fn sqlite(name: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.database.url = format!(
            "sqlite://{}",
            dir.path().join(format!("{name}.db")).display()
        );
        Self::open(cfg, None, dir).await
    }

    async fn open(mut cfg: Config, schema: Option<String>, dir: tempfile::TempDir) -> Env {
        cfg.queue.kind = QueueKind::Local;
        let store = Store::connect(
            &cfg.database.url,
            &StoreOptions {
                max_connections: 8,
                pg_schema: schema.clone(),
            },
        )
        .await
        .expect("connecting the test database (Postgres must run on 127.0.0.1:5432)");
        store.migrate().await.expect("migrating");
        Env {
            cfg,
            store,
            schema,
            _dir: dir,
        }
    }

    /// The in-process queue (the API state wants one; rating routes never use it).
    pub async fn queue(&self) -> JobQueue {
        JobQueue::connect(&self.cfg.queue, &self.store)
            .await
            .expect("local queue")
    }

    pub async fn cleanup(self) {
        if let Some(s) = &self.schema {
            let _ = self.store.drop_pg_schema(s).await;
        }
        self.store.close().await;
    }
}

/// A distinct little PNG per seed.
pub fn png(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(56, 42, |x, y| {
        image::Rgb([
            (x * 4 + seed * 7) as u8,
            (y * 5 + seed * 13) as u8,
            ((x ^ y) + seed) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A model output like the pipeline's: `tags` with scores (in order) and 7×7 attention maps
/// peaking at a different cell per hashtag, and an optional story.
pub fn output(tags: &[(&str, f64)], story: Option<&str>) -> serde_json::Value {
    let hashtags: Vec<serde_json::Value> = tags
        .iter()
        .enumerate()
        .map(|(i, (tag, score))| {
            let mut attention = vec![0.2 / 48.0; 49];
            attention[(i * 8) % 49] = 0.8;
            serde_json::json!({ "tag": tag, "score": score, "attention": attention })
        })
        .collect();
    serde_json::json!({
        "hashtags": hashtags,
        "instagram": [],
        "story": story,
        "story_seed": tags.first().map(|t| t.0),
    })
}

/// Stores a post (PNG bytes) and its result from `version`, as the worker would; returns the
/// result id.
pub async fn insert_result(store: &Store, seed: u32, version: &str, out: serde_json::Value) -> i64 {
    insert_result_with(store, seed, version, out, ImageSource::Bytes(png(seed))).await
}

/// [`insert_result`] with the post's image given (bytes or a URL).
pub async fn insert_result_with(
    store: &Store,
    seed: u32,
    version: &str,
    out: serde_json::Value,
    image: ImageSource,
) -> i64 {
    let post = NewPost {
        source: "test:ratings".into(),
        source_kind: "test".into(),
        external_id: format!("img-{seed}"),
        image,
        caption: None,
    };
    let ing = store
        .ingest(&post, hashtale_types::JobState::Queued)
        .await
        .unwrap();
    let job_id = match ing.job_id {
        Some(j) => j,
        None => store.job_for_post(ing.post_id).await.unwrap().unwrap().id,
    };
    let out: hashtale_types::ImageResult =
        serde_json::from_value(out).expect("a model output's shape");
    let story = out.story.clone();
    store
        .complete(
            version,
            &[NewResult {
                job_id,
                post_id: ing.post_id,
                output: out,
                story,
                timings: Timings::default(),
            }],
        )
        .await
        .unwrap();
    store
        .results_for_post(ing.post_id)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.model_version == version)
        .expect("the stored result")
        .id
}

/// A plain result: three hashtags and a story.
pub fn default_output(seed: u32) -> serde_json::Value {
    output(
        &[
            ("beach", 0.9 - seed as f64 * 0.01),
            ("sea", 0.5),
            ("sunset", 0.3),
        ],
        Some("The tide came in slowly while we talked about nothing at all."),
    )
}
