//! The store: one interface over Postgres (production) and SQLite (embedded).
//!
//! Every query is written once with `$n` placeholders (both drivers accept them) and run on
//! whichever pool is configured; only the job claim differs (`FOR UPDATE SKIP LOCKED`).
//! Uniqueness lives in the schema: posts per (source, external id), jobs per post, results
//! per (post, model version); inserts use `ON CONFLICT DO NOTHING`, so re-delivery never
//! duplicates anything.
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{PgPool, Row, SqlitePool};

use hashtale_core::{Error, Result};
use hashtale_types::{
    now_ms, ImageResult, ImageSource, Ingested, JobState, NewPost, ResultMessage, Timings,
};

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// A pool on one of the two backends. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to whichever pool the store holds.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Postgres($pool) => $body,
            Store::Sqlite($pool) => $body,
        }
    };
}

/// Image bytes one ingest statement binds at most.
pub const MAX_INGEST_STATEMENT_BYTES: usize = 32 << 20;

/// Consecutive groups of `posts` whose image bytes add up to at most `cap` (a single larger
/// post gets a group of its own).
fn byte_capped_groups(posts: &[NewPost], cap: usize) -> Vec<&[NewPost]> {
    let size = |p: &NewPost| match &p.image {
        ImageSource::Bytes(b) => b.len(),
        ImageSource::Url(u) => u.len(),
    };
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, p) in posts.iter().enumerate() {
        let n = size(p);
        if i > start && bytes + n > cap {
            groups.push(&posts[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += n;
    }
    if start < posts.len() {
        groups.push(&posts[start..]);
    }
    groups
}

/// Builds a `ResultRow` from a row of `SELECT id, post_id, job_id, model_version, output,
/// story, timings, created_at` (a macro because the row type differs per backend).
macro_rules! result_row {
    ($r:expr) => {
        Ok::<_, Error>(ResultRow {
            id: $r.try_get(0)?,
            post_id: $r.try_get(1)?,
            job_id: $r.try_get(2)?,
            model_version: $r.try_get(3)?,
            output: $r.try_get::<Json<ImageResult>, _>(4)?.0,
            story: $r.try_get(5)?,
            timings: $r.try_get::<Json<Timings>, _>(6)?.0,
            created_at: $r.try_get(7)?,
        })
    };
}

/// Builds a `WorkItem` from a row of `SELECT id, post_id, attempts, state, source name,
/// external_id, image_url, blob bytes`.
macro_rules! work_item {
    ($r:expr) => {{
        let url: Option<String> = $r.try_get(6)?;
        let bytes: Option<Vec<u8>> = $r.try_get(7)?;
        let image = match (url, bytes) {
            (_, Some(b)) => ImageSource::Bytes(b),
            (Some(u), None) => ImageSource::Url(u),
            (None, None) => return Err(Error::Other("post has no image".into())),
        };
        Ok::<_, Error>(WorkItem {
            job_id: $r.try_get(0)?,
            post_id: $r.try_get(1)?,
            attempts: $r.try_get(2)?,
            state: parse_job_state($r.try_get(3)?)?,
            source: $r.try_get(4)?,
            external_id: $r.try_get(5)?,
            image,
        })
    }};
}

/// A job row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobRow {
    pub id: i64,
    pub post_id: i64,
    pub state: JobState,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A post row (without image bytes).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PostRow {
    pub id: i64,
    pub source: String,
    pub external_id: String,
    pub image_url: Option<String>,
    pub image_sha256: Option<String>,
    pub caption: Option<String>,
    pub first_seen: i64,
}

/// A stored result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResultRow {
    pub id: i64,
    pub post_id: i64,
    pub job_id: Option<i64>,
    pub model_version: String,
    pub output: ImageResult,
    pub story: Option<String>,
    pub timings: Timings,
    pub created_at: i64,
}

/// What a worker needs to process one claimed job.
#[derive(Debug, Clone)]
pub struct WorkItem {
    pub job_id: i64,
    pub post_id: i64,
    pub attempts: i64,
    pub state: JobState,
    pub source: String,
    pub external_id: String,
    pub image: ImageSource,
}

/// One finished job, ready to be committed.
#[derive(Debug, Clone)]
pub struct NewResult {
    pub job_id: i64,
    pub post_id: i64,
    pub output: ImageResult,
    pub story: Option<String>,
    pub timings: Timings,
}

/// A job as the local (in-process) queue hands it out; `attempts` are those made before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub job_id: i64,
    pub post_id: i64,
    pub attempts: i64,
}

/// What a new result still owes the outside world: its message on the results exchange and
/// its webhook call. Owed deliveries stay NULL in `results` until confirmed (the outbox).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owed {
    pub publish: bool,
    pub webhook: bool,
}

impl Owed {
    pub const NOTHING: Owed = Owed {
        publish: false,
        webhook: false,
    };
}

/// A result row created by [`Store::complete_with`] (an existing result is not reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub result_id: i64,
    pub post_id: i64,
    pub job_id: i64,
}

/// The outbox's two kinds of delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbox {
    /// The message on the `results` exchange (`published_at`).
    Publish,
    /// The webhook call (`webhook_sent_at`).
    Webhook,
}

impl Outbox {
    fn column(self) -> &'static str {
        match self {
            Outbox::Publish => "published_at",
            Outbox::Webhook => "webhook_sent_at",
        }
    }
}

/// Connection settings beyond the URL.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// Postgres only: use (and create) this schema; tests isolate themselves this way.
    pub pg_schema: Option<String>,
}

fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A stored state name, read back.
fn parse_job_state(name: String) -> Result<JobState> {
    JobState::parse(&name).ok_or_else(|| Error::Other(format!("unknown job state {name:?}")))
}

/// Hex sha256 of bytes: how stored images are named.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Store {
    /// Opens a pool for `postgres://…` or `sqlite:…` (the SQLite file is created if missing).
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Self> {
        let max = opts.max_connections.max(1);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut co = PgConnectOptions::from_str(url)?;
            if let Some(schema) = &opts.pg_schema {
                if !schema
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(Error::Config(format!("bad schema name {schema:?}")));
                }
                let admin = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(co.clone())
                    .await?;
                sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                    .execute(&admin)
                    .await?;
                admin.close().await;
                co = co.options([("search_path", schema.as_str())]);
            }
            let pool = PgPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(co)
                .await?;
            Ok(Store::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let co = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(co)
                .await?;
            Ok(Store::Sqlite(pool))
        } else {
            Err(Error::Config(format!(
                "unsupported database url {}",
                hashtale_core::config::mask_url_password(url)
            )))
        }
    }

    /// `postgres` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Applies pending migrations (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Store::Postgres(p) => PG_MIGRATIONS.run(p).await?,
            Store::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    /// Checks the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, p => { sqlx::query("SELECT 1").execute(p).await?; });
        Ok(())
    }

    /// Postgres only: drops a schema and everything in it (test and bench clean-up).
    pub async fn drop_pg_schema(&self, schema: &str) -> Result<()> {
        if !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::Config(format!("bad schema name {schema:?}")));
        }
        if let Store::Postgres(p) = self {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(p)
                .await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    /// The id of source `name`, created on first use.
    pub async fn source_id(&self, name: &str, kind: &str) -> Result<i64> {
        on_pool!(self, p => {
            sqlx::query("INSERT INTO sources (name, kind, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
                .bind(name).bind(kind).bind(now_ms()).execute(p).await?;
            let row = sqlx::query("SELECT id FROM sources WHERE name = $1").bind(name).fetch_one(p).await?;
            Ok(row.try_get::<i64, _>(0)?)
        })
    }

    /// ETag and Last-Modified remembered for a feed.
    pub async fn feed_validators(
        &self,
        source_id: i64,
    ) -> Result<(Option<String>, Option<String>)> {
        on_pool!(self, p => {
            let row = sqlx::query("SELECT etag, last_modified FROM sources WHERE id = $1")
                .bind(source_id).fetch_one(p).await?;
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
    }

    pub async fn set_feed_validators(
        &self,
        source_id: i64,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> Result<()> {
        on_pool!(self, p => {
            sqlx::query("UPDATE sources SET etag = $1, last_modified = $2 WHERE id = $3")
                .bind(etag).bind(last_modified).bind(source_id).execute(p).await?;
        });
        Ok(())
    }

    /// Stores a post and, if it is new, its job in state `job_state` (`pending` when a broker
    /// message still has to be published, `queued` for the local queue), in one transaction.
    pub async fn ingest(&self, post: &NewPost, job_state: JobState) -> Result<Ingested> {
        let source_id = self.source_id(&post.source, &post.source_kind).await?;
        let now = now_ms();
        let (url, sha, bytes) = match &post.image {
            ImageSource::Url(u) => (Some(u.as_str()), None, None),
            ImageSource::Bytes(b) => (None, Some(sha256_hex(b)), Some(b.as_slice())),
        };
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            if let (Some(sha), Some(bytes)) = (&sha, bytes) {
                sqlx::query("INSERT INTO blobs (sha256, bytes, created_at) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING")
                    .bind(sha).bind(bytes).bind(now).execute(&mut *tx).await?;
            }
            let inserted = sqlx::query(
                "INSERT INTO posts (source_id, external_id, image_url, image_sha256, caption, first_seen) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (source_id, external_id) DO NOTHING RETURNING id")
                .bind(source_id).bind(&post.external_id).bind(url).bind(&sha).bind(&post.caption).bind(now)
                .fetch_optional(&mut *tx).await?;
            let out = match inserted {
                Some(row) => {
                    let post_id: i64 = row.try_get(0)?;
                    let job = sqlx::query(
                        "INSERT INTO jobs (post_id, state, attempts, available_at, created_at, updated_at) \
                         VALUES ($1, $2, 0, $3, $3, $3) RETURNING id")
                        .bind(post_id).bind(job_state.as_str()).bind(now).fetch_one(&mut *tx).await?;
                    Ingested { post_id, job_id: Some(job.try_get(0)?) }
                }
                None => {
                    let row = sqlx::query("SELECT id FROM posts WHERE source_id = $1 AND external_id = $2")
                        .bind(source_id).bind(&post.external_id).fetch_one(&mut *tx).await?;
                    Ingested { post_id: row.try_get(0)?, job_id: None }
                }
            };
            tx.commit().await?;
            Ok(out)
        })
    }

    /// [`Store::ingest`] for many posts (backfills, bursts): one result per input, in order; a
    /// post repeated within `posts` is new only the first time. Posts go in transactions of at
    /// most [`MAX_INGEST_STATEMENT_BYTES`] of image bytes (one statement binds every image, and a
    /// statement must stay well under Postgres' message limit with phone photos).
    pub async fn ingest_many(
        &self,
        posts: &[NewPost],
        job_state: JobState,
    ) -> Result<Vec<Ingested>> {
        let mut out = Vec::with_capacity(posts.len());
        for group in byte_capped_groups(posts, MAX_INGEST_STATEMENT_BYTES) {
            out.extend(self.ingest_group(group, job_state).await?);
        }
        Ok(out)
    }

    /// One transaction of [`Store::ingest_many`].
    async fn ingest_group(&self, posts: &[NewPost], job_state: JobState) -> Result<Vec<Ingested>> {
        if posts.is_empty() {
            return Ok(Vec::new());
        }
        let mut source_ids = std::collections::HashMap::new();
        for p in posts {
            if !source_ids.contains_key(&p.source) {
                let id = self.source_id(&p.source, &p.source_kind).await?;
                source_ids.insert(p.source.clone(), id);
            }
        }
        let now = now_ms();
        let shas: Vec<Option<String>> = posts
            .iter()
            .map(|p| match &p.image {
                ImageSource::Bytes(b) => Some(sha256_hex(b)),
                ImageSource::Url(_) => None,
            })
            .collect();
        let mut blobs: Vec<(&str, &[u8])> = Vec::new();
        for (p, sha) in posts.iter().zip(&shas) {
            if let (ImageSource::Bytes(b), Some(sha)) = (&p.image, sha) {
                if !blobs.iter().any(|(s, _)| *s == sha.as_str()) {
                    blobs.push((sha.as_str(), b.as_slice()));
                }
            }
        }
        let mut blob_sql = String::from("INSERT INTO blobs (sha256, bytes, created_at) VALUES ");
        for i in 0..blobs.len() {
            let b = 2 + i * 2;
            blob_sql.push_str(&format!(
                "{}(${b}, ${}, $1)",
                if i > 0 { "," } else { "" },
                b + 1
            ));
        }
        blob_sql.push_str(" ON CONFLICT (sha256) DO NOTHING");
        let mut post_sql = String::from(
            "INSERT INTO posts (source_id, external_id, image_url, image_sha256, caption, first_seen) VALUES ",
        );
        for i in 0..posts.len() {
            let b = 2 + i * 5;
            post_sql.push_str(&format!(
                "{}(${b}, ${}, ${}, ${}, ${}, $1)",
                if i > 0 { "," } else { "" },
                b + 1,
                b + 2,
                b + 3,
                b + 4
            ));
        }
        post_sql.push_str(
            " ON CONFLICT (source_id, external_id) DO NOTHING RETURNING id, source_id, external_id",
        );
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            if !blobs.is_empty() {
                let mut q = sqlx::query(&blob_sql).bind(now);
                for (sha, bytes) in &blobs { q = q.bind(*sha).bind(*bytes); }
                q.execute(&mut *tx).await?;
            }
            let mut q = sqlx::query(&post_sql).bind(now);
            for (post, sha) in posts.iter().zip(&shas) {
                let url = match &post.image { ImageSource::Url(u) => Some(u.as_str()), ImageSource::Bytes(_) => None };
                q = q.bind(source_ids[&post.source]).bind(&post.external_id).bind(url).bind(sha).bind(&post.caption);
            }
            let rows = q.fetch_all(&mut *tx).await?;
            let mut inserted = std::collections::HashMap::new();
            for r in &rows {
                let id: i64 = r.try_get(0)?;
                let sid: i64 = r.try_get(1)?;
                let ext: String = r.try_get(2)?;
                inserted.insert((sid, ext), id);
            }
            let mut out = Vec::with_capacity(posts.len());
            let mut new_posts = Vec::new();
            for post in posts {
                let key = (source_ids[&post.source], post.external_id.clone());
                match inserted.remove(&key) {
                    Some(id) => {
                        new_posts.push(id);
                        out.push(Ingested { post_id: id, job_id: None });
                    }
                    None => {
                        let row = sqlx::query("SELECT id FROM posts WHERE source_id = $1 AND external_id = $2")
                            .bind(key.0).bind(&key.1).fetch_one(&mut *tx).await?;
                        out.push(Ingested { post_id: row.try_get(0)?, job_id: None });
                    }
                }
            }
            if !new_posts.is_empty() {
                let mut job_sql = String::from(
                    "INSERT INTO jobs (post_id, state, attempts, available_at, created_at, updated_at) VALUES ");
                for i in 0..new_posts.len() {
                    job_sql.push_str(&format!("{}(${}, $1, 0, $2, $2, $2)", if i > 0 { "," } else { "" }, 3 + i));
                }
                job_sql.push_str(" RETURNING id, post_id");
                let mut q = sqlx::query(&job_sql).bind(job_state.as_str()).bind(now);
                for id in &new_posts { q = q.bind(id); }
                let jobs = q.fetch_all(&mut *tx).await?;
                let mut by_post = std::collections::HashMap::new();
                for r in &jobs {
                    by_post.insert(r.try_get::<i64, _>(1)?, r.try_get::<i64, _>(0)?);
                }
                let mut first = std::collections::HashSet::new();
                for o in out.iter_mut() {
                    if let Some(j) = by_post.get(&o.post_id) {
                        if first.insert(o.post_id) {
                            o.job_id = Some(*j);
                        }
                    }
                }
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    /// Jobs written but not yet published to the broker (e.g. the publisher died in between).
    pub async fn pending_jobs(&self, limit: i64) -> Result<Vec<(i64, i64)>> {
        self.pending_jobs_before(limit, i64::MAX).await
    }

    /// [`Store::pending_jobs`] last updated before `before_ms` (ms since the epoch).
    pub async fn pending_jobs_before(&self, limit: i64, before_ms: i64) -> Result<Vec<(i64, i64)>> {
        on_pool!(self, p => {
            let rows = sqlx::query("SELECT id, post_id FROM jobs WHERE state = $1 AND updated_at < $2 ORDER BY id LIMIT $3")
                .bind(JobState::Pending.as_str()).bind(before_ms).bind(limit).fetch_all(p).await?;
            rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
        })
    }

    /// Marks jobs as handed to the broker (only those still pending).
    pub async fn mark_queued(&self, job_ids: &[i64]) -> Result<()> {
        if job_ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE jobs SET state = $1, updated_at = $2 WHERE state = $3 AND id IN ({})",
            placeholders(4, job_ids.len())
        );
        on_pool!(self, p => {
            let mut q = sqlx::query(&sql).bind(JobState::Queued.as_str()).bind(now_ms()).bind(JobState::Pending.as_str());
            for id in job_ids { q = q.bind(id); }
            q.execute(p).await?;
        });
        Ok(())
    }

    /// Marks delivered jobs running and counts the attempt; returns what the worker needs.
    /// Jobs already done are returned with state `done` so the worker can just acknowledge them.
    pub async fn start_jobs(&self, job_ids: &[i64]) -> Result<Vec<WorkItem>> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let ids = placeholders(5, job_ids.len());
        let upd = format!(
            "UPDATE jobs SET state = $1, attempts = attempts + 1, started_at = $2, updated_at = $2 \
             WHERE state NOT IN ($3, $4) AND id IN ({ids})"
        );
        let from =
            "FROM jobs j JOIN posts p ON p.id = j.post_id JOIN sources s ON s.id = p.source_id \
                    LEFT JOIN blobs b ON b.sha256 = p.image_sha256";
        let rows = match self {
            // One round trip: the update's RETURNING carries the new state and attempts (the
            // outer SELECT still sees the rows as they were before it).
            Store::Postgres(p) => {
                let sql = format!(
                    "WITH u AS ({upd} RETURNING id, state, attempts) \
                     SELECT j.id, j.post_id, COALESCE(u.attempts, j.attempts), COALESCE(u.state, j.state), \
                     s.name, p.external_id, p.image_url, b.bytes {from} LEFT JOIN u ON u.id = j.id \
                     WHERE j.id IN ({ids}) ORDER BY j.id"
                );
                let mut q = sqlx::query(&sql)
                    .bind(JobState::Running.as_str())
                    .bind(now)
                    .bind(JobState::Done.as_str())
                    .bind(JobState::Failed.as_str());
                for id in job_ids {
                    q = q.bind(id);
                }
                let rows = q.fetch_all(p).await?;
                rows.iter()
                    .map(|r| work_item!(r))
                    .collect::<Result<Vec<_>>>()?
            }
            Store::Sqlite(p) => {
                let sel = format!(
                    "SELECT j.id, j.post_id, j.attempts, j.state, s.name, p.external_id, p.image_url, b.bytes \
                     {from} WHERE j.id IN ({}) ORDER BY j.id",
                    placeholders(1, job_ids.len())
                );
                let mut tx = p.begin().await?;
                let mut q = sqlx::query(&upd)
                    .bind(JobState::Running.as_str())
                    .bind(now)
                    .bind(JobState::Done.as_str())
                    .bind(JobState::Failed.as_str());
                for id in job_ids {
                    q = q.bind(id);
                }
                q.execute(&mut *tx).await?;
                let mut q = sqlx::query(&sel);
                for id in job_ids {
                    q = q.bind(id);
                }
                let rows = q.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows.iter()
                    .map(|r| work_item!(r))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        Ok(rows)
    }

    /// Commits results and marks their jobs done, in one transaction. A result that already
    /// exists for (post, model version) is kept as is: re-delivery never duplicates. Nothing is
    /// owed for these results (see [`Store::complete_with`]).
    pub async fn complete(&self, model_version: &str, results: &[NewResult]) -> Result<()> {
        self.complete_with(model_version, results, Owed::NOTHING)
            .await
            .map(|_| ())
    }

    /// [`Store::complete`], recording what the new results still owe (the outbox), and
    /// returning the rows it created, by id (results that already existed are left out: their
    /// own outbox entries stand).
    pub async fn complete_with(
        &self,
        model_version: &str,
        results: &[NewResult],
        owed: Owed,
    ) -> Result<Vec<Committed>> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let published_at = (!owed.publish).then_some(now);
        let webhook_sent_at = (!owed.webhook).then_some(now);
        let first = 6;
        let mut ins = String::from(
            "INSERT INTO results (post_id, job_id, model_version, output, story, timings, created_at, \
             published_at, webhook_sent_at) VALUES ",
        );
        for i in 0..results.len() {
            let b = first + i * 5;
            if i > 0 {
                ins.push(',');
            }
            ins.push_str(&format!(
                "(${b}, ${}, $1, ${}, ${}, ${}, $2, $3, $4)",
                b + 1,
                b + 2,
                b + 3,
                b + 4
            ));
        }
        ins.push_str(
            " ON CONFLICT (post_id, model_version) DO NOTHING RETURNING id, post_id, job_id",
        );
        let job_ids = placeholders(first + results.len() * 5, results.len());
        let upd = format!(
            "UPDATE jobs SET state = $5, last_error = NULL, finished_at = $2, updated_at = $2 WHERE id IN ({job_ids})"
        );
        let mv = "INSERT INTO model_versions (version, first_seen) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING";
        macro_rules! bind_all {
            ($sql:expr) => {{
                let mut q = sqlx::query($sql)
                    .bind(model_version)
                    .bind(now)
                    .bind(published_at)
                    .bind(webhook_sent_at)
                    .bind(JobState::Done.as_str());
                for r in results {
                    q = q
                        .bind(r.post_id)
                        .bind(r.job_id)
                        .bind(Json(&r.output))
                        .bind(&r.story)
                        .bind(Json(&r.timings));
                }
                for r in results {
                    q = q.bind(r.job_id);
                }
                q
            }};
        }
        macro_rules! committed {
            ($rows:expr) => {
                $rows
                    .iter()
                    .map(|r| {
                        Ok(Committed {
                            result_id: r.try_get(0)?,
                            post_id: r.try_get(1)?,
                            job_id: r.try_get::<Option<i64>, _>(2)?.unwrap_or_default(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?
            };
        }
        let mut out = match self {
            // One statement, so one round trip and atomic without BEGIN/COMMIT (foreign keys
            // are checked at the end of the statement, after the model version is in).
            Store::Postgres(p) => {
                let sql = format!("WITH mv AS ({mv}), ins AS ({ins}), upd AS ({upd}) SELECT id, post_id, job_id FROM ins");
                committed!(bind_all!(&sql).fetch_all(p).await?)
            }
            Store::Sqlite(p) => {
                let mut tx = p.begin().await?;
                sqlx::query(mv)
                    .bind(model_version)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                // Every statement gets every argument (SQLite ignores the unused ones).
                let rows = bind_all!(&ins).fetch_all(&mut *tx).await?;
                bind_all!(&upd).execute(&mut *tx).await?;
                tx.commit().await?;
                committed!(rows)
            }
        };
        out.sort_by_key(|c| c.result_id);
        Ok(out)
    }

    /// Results that still owe `what`, created in `[created_after, created_before]`, oldest
    /// first, as the messages to deliver.
    pub async fn owed_results(
        &self,
        what: Outbox,
        created_after: i64,
        created_before: i64,
        limit: i64,
    ) -> Result<Vec<ResultMessage>> {
        let sql = format!(
            "SELECT r.id, r.post_id, r.job_id, r.model_version, r.output, s.name, p.external_id \
             FROM results r JOIN posts p ON p.id = r.post_id JOIN sources s ON s.id = p.source_id \
             WHERE r.{} IS NULL AND r.created_at >= $1 AND r.created_at <= $2 ORDER BY r.id LIMIT $3",
            what.column()
        );
        on_pool!(self, p => {
            let rows = sqlx::query(&sql).bind(created_after).bind(created_before).bind(limit).fetch_all(p).await?;
            rows.iter().map(|r| Ok(ResultMessage {
                result_id: r.try_get(0)?,
                post_id: r.try_get(1)?,
                job_id: r.try_get::<Option<i64>, _>(2)?.unwrap_or_default(),
                model_version: r.try_get(3)?,
                output: r.try_get::<Json<ImageResult>, _>(4)?.0,
                source: r.try_get(5)?,
                external_id: r.try_get(6)?,
            })).collect()
        })
    }

    /// Records that `what` was delivered for these results.
    pub async fn mark_delivered(&self, what: Outbox, result_ids: &[i64]) -> Result<()> {
        if result_ids.is_empty() {
            return Ok(());
        }
        let col = what.column();
        let sql = format!(
            "UPDATE results SET {col} = $1 WHERE {col} IS NULL AND id IN ({})",
            placeholders(2, result_ids.len())
        );
        on_pool!(self, p => {
            let mut q = sqlx::query(&sql).bind(now_ms());
            for id in result_ids { q = q.bind(id); }
            q.execute(p).await?;
        });
        Ok(())
    }

    /// Records a failed attempt: `failed` for good, or `retrying`/`queued` until `available_at`.
    pub async fn fail_job(
        &self,
        job_id: i64,
        error: &str,
        new_state: JobState,
        available_at: i64,
    ) -> Result<()> {
        let now = now_ms();
        let finished = (new_state == JobState::Failed).then_some(now);
        let error: String = error.chars().take(2000).collect();
        on_pool!(self, p => {
            sqlx::query("UPDATE jobs SET state = $1, last_error = $2, available_at = $3, updated_at = $4, finished_at = $5 \
                         WHERE id = $6 AND state <> $7")
                .bind(new_state.as_str()).bind(&error).bind(available_at).bind(now).bind(finished).bind(job_id).bind(JobState::Done.as_str())
                .execute(p).await?;
        });
        Ok(())
    }

    /// Local queue: claims up to `n` due jobs (marking them running so no other consumer takes
    /// them; the worker's [`Store::start_jobs`] counts the attempt, as for RabbitMQ).
    pub async fn claim(&self, n: i64) -> Result<Vec<Claimed>> {
        let now = now_ms();
        let lock = match self {
            Store::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Store::Sqlite(_) => "",
        };
        let sql = format!(
            "UPDATE jobs SET state = $1, updated_at = $2 \
             WHERE id IN (SELECT id FROM jobs WHERE state = $3 AND available_at <= $2 ORDER BY available_at, id LIMIT $4{lock}) \
             RETURNING id, post_id, attempts"
        );
        on_pool!(self, p => {
            let rows = sqlx::query(&sql).bind(JobState::Running.as_str()).bind(now).bind(JobState::Queued.as_str()).bind(n).fetch_all(p).await?;
            let mut v: Vec<Claimed> = rows.iter().map(|r| Ok(Claimed {
                job_id: r.try_get(0)?, post_id: r.try_get(1)?, attempts: r.try_get(2)?,
            })).collect::<Result<_>>()?;
            v.sort_by_key(|c| c.job_id);
            Ok(v)
        })
    }

    /// Local queue, at start: jobs left running by a previous process go back to the queue.
    pub async fn requeue_running(&self) -> Result<u64> {
        on_pool!(self, p => {
            let r = sqlx::query("UPDATE jobs SET state = $1, updated_at = $2 WHERE state IN ($3, $4)")
                .bind(JobState::Queued.as_str()).bind(now_ms()).bind(JobState::Running.as_str()).bind(JobState::Pending.as_str()).execute(p).await?;
            Ok(r.rows_affected())
        })
    }

    /// The earliest `available_at` of queued jobs (to sleep until then).
    pub async fn next_due(&self) -> Result<Option<i64>> {
        on_pool!(self, p => {
            let row = sqlx::query("SELECT MIN(available_at) FROM jobs WHERE state = $1")
                .bind(JobState::Queued.as_str()).fetch_one(p).await?;
            Ok(row.try_get::<Option<i64>, _>(0)?)
        })
    }

    pub async fn job(&self, id: i64) -> Result<Option<JobRow>> {
        on_pool!(self, p => {
            let row = sqlx::query("SELECT id, post_id, state, attempts, last_error, created_at, updated_at, started_at, finished_at FROM jobs WHERE id = $1")
                .bind(id).fetch_optional(p).await?;
            row.map(|r| Ok(JobRow {
                id: r.try_get(0)?, post_id: r.try_get(1)?, state: parse_job_state(r.try_get(2)?)?, attempts: r.try_get(3)?,
                last_error: r.try_get(4)?, created_at: r.try_get(5)?, updated_at: r.try_get(6)?,
                started_at: r.try_get(7)?, finished_at: r.try_get(8)?,
            })).transpose()
        })
    }

    /// The job of a post.
    pub async fn job_for_post(&self, post_id: i64) -> Result<Option<JobRow>> {
        let id = on_pool!(self, p => {
            sqlx::query("SELECT id FROM jobs WHERE post_id = $1").bind(post_id).fetch_optional(p).await?
                .map(|r| r.try_get::<i64, _>(0)).transpose()?
        });
        match id {
            Some(id) => self.job(id).await,
            None => Ok(None),
        }
    }

    pub async fn post(&self, id: i64) -> Result<Option<PostRow>> {
        on_pool!(self, p => {
            let row = sqlx::query("SELECT p.id, s.name, p.external_id, p.image_url, p.image_sha256, p.caption, p.first_seen \
                                   FROM posts p JOIN sources s ON s.id = p.source_id WHERE p.id = $1")
                .bind(id).fetch_optional(p).await?;
            row.map(|r| Ok(PostRow {
                id: r.try_get(0)?, source: r.try_get(1)?, external_id: r.try_get(2)?, image_url: r.try_get(3)?,
                image_sha256: r.try_get(4)?, caption: r.try_get(5)?, first_seen: r.try_get(6)?,
            })).transpose()
        })
    }

    /// Every result of a post (one per model version).
    pub async fn results_for_post(&self, post_id: i64) -> Result<Vec<ResultRow>> {
        on_pool!(self, p => {
            let rows = sqlx::query("SELECT id, post_id, job_id, model_version, output, story, timings, created_at \
                                    FROM results WHERE post_id = $1 ORDER BY id")
                .bind(post_id).fetch_all(p).await?;
            rows.iter().map(|r| result_row!(r)).collect()
        })
    }

    /// Results created at or after `since_ms` with id above `after_id`, oldest first (paging).
    pub async fn results_page(
        &self,
        since_ms: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<ResultRow>> {
        on_pool!(self, p => {
            let rows = sqlx::query("SELECT id, post_id, job_id, model_version, output, story, timings, created_at \
                                    FROM results WHERE created_at >= $1 AND id > $2 ORDER BY id LIMIT $3")
                .bind(since_ms).bind(after_id).bind(limit).fetch_all(p).await?;
            rows.iter().map(|r| result_row!(r)).collect()
        })
    }

    /// Number of jobs in each state (every state listed, zeros included).
    pub async fn job_counts(&self) -> Result<Vec<(JobState, i64)>> {
        let rows: Vec<(String, i64)> = on_pool!(self, p => {
            let rows = sqlx::query("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetch_all(p).await?;
            rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_>>()?
        });
        Ok(JobState::ALL
            .iter()
            .map(|s| {
                let n = rows
                    .iter()
                    .find(|(k, _)| k == s.as_str())
                    .map_or(0, |(_, n)| *n);
                (*s, n)
            })
            .collect())
    }

    /// Counts rows of a table among a fixed set (tests and the bench).
    pub async fn count(&self, table: &str) -> Result<i64> {
        if ![
            "sources",
            "posts",
            "jobs",
            "results",
            "blobs",
            "backfills",
            "model_versions",
        ]
        .contains(&table)
        {
            return Err(Error::Other(format!("unknown table {table}")));
        }
        on_pool!(self, p => {
            let row = sqlx::query(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(p).await?;
            Ok(row.try_get::<i64, _>(0)?)
        })
    }

    /// How many post ids have ever been drawn (Postgres' `posts_id_seq`; every insert attempt,
    /// even one that finds the post already there, draws one). `None` on SQLite. Lets tests
    /// tell that an idle source leaves the database alone.
    pub async fn post_ids_drawn(&self) -> Result<Option<i64>> {
        match self {
            Store::Postgres(p) => {
                let row = sqlx::query("SELECT last_value FROM posts_id_seq")
                    .fetch_one(p)
                    .await?;
                Ok(Some(row.try_get::<i64, _>(0)?))
            }
            Store::Sqlite(_) => Ok(None),
        }
    }

    /// A backfill's id and how many input lines it had already processed (resume point).
    pub async fn backfill_start(&self, key: &str, total: i64) -> Result<(i64, i64)> {
        let now = now_ms();
        on_pool!(self, p => {
            sqlx::query("INSERT INTO backfills (key, total, done, state, created_at, updated_at) VALUES ($1, $2, 0, 'running', $3, $3) \
                         ON CONFLICT (key) DO NOTHING")
                .bind(key).bind(total).bind(now).execute(p).await?;
            let row = sqlx::query("SELECT id, done FROM backfills WHERE key = $1").bind(key).fetch_one(p).await?;
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
    }

    pub async fn backfill_progress(&self, id: i64, done: i64, finished: bool) -> Result<()> {
        let st = if finished { "done" } else { "running" };
        on_pool!(self, p => {
            sqlx::query("UPDATE backfills SET done = $1, state = $2, updated_at = $3 WHERE id = $4")
                .bind(done).bind(st).bind(now_ms()).bind(id).execute(p).await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(bytes: usize) -> NewPost {
        NewPost {
            source: "t".into(),
            source_kind: "test".into(),
            external_id: format!("{bytes}"),
            image: ImageSource::Bytes(vec![0; bytes]),
            caption: None,
        }
    }

    #[test]
    fn ingest_groups_stay_under_the_byte_cap() {
        let posts: Vec<NewPost> = [4, 4, 4, 9, 1, 1, 3].iter().map(|&n| post(n)).collect();
        let groups = byte_capped_groups(&posts, 8);
        let sizes: Vec<Vec<usize>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|p| match &p.image {
                        ImageSource::Bytes(b) => b.len(),
                        ImageSource::Url(_) => 0,
                    })
                    .collect()
            })
            .collect();
        // A post over the cap goes alone; order is kept; nothing is lost.
        assert_eq!(sizes, vec![vec![4, 4], vec![4], vec![9], vec![1, 1, 3]]);
        assert!(byte_capped_groups(&[], 8).is_empty());
    }
}
