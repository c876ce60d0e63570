//! hashtale's store: one interface over Postgres (production) and SQLite (embedded).
//!
//! Every query is written once with `$n` placeholders (both drivers accept them), or built with
//! sqlx's `QueryBuilder` where its length varies, and run on whichever pool is configured.
//! Uniqueness lives in the schema: posts per (source, external id), jobs per post, results
//! per (post, model version); inserts use `ON CONFLICT DO NOTHING`, so re-delivery never
//! duplicates anything.
//!
//! # Module map
//!
//! - `lib.rs`: [`Store`], connecting, migrations, health, table counts, the row macros.
//! - [`posts`]: ingesting posts (with their image blobs and jobs) and reading them back.
//! - [`jobs`]: job rows: publishing state, starting, failing, counts.
//! - [`results`]: committing results and reading them back.
//! - [`outbox`]: what committed results still owe (messages, webhook calls).
//! - [`sources`]: source ids, feed validators, backfill progress.
//! - [`ratings`]: raters, assignments and answers of the ratings page, and the rows reports read.

use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

use hashtale_core::{Error, Result};
use hashtale_types::JobState;

/// Runs `$body` with `$pool` bound to whichever pool the store holds (`$body` is compiled once
/// per backend, so one query text serves both). Exported for SQL that lives beside its only
/// user (the local queue's).
#[macro_export]
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::Store::Postgres($pool) => $body,
            $crate::Store::Sqlite($pool) => $body,
        }
    };
}

/// Appends `(…)` binding `ids`: an `IN` list for both backends (SQLite has no arrays, so
/// `= ANY($1)` is not an option).
fn push_id_list<'a, DB: sqlx::Database>(qb: &mut sqlx::QueryBuilder<'a, DB>, ids: &[i64])
where
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    qb.push("(");
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    list.push_unseparated(")");
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

pub mod jobs;
pub mod outbox;
pub mod posts;
pub mod ratings;
pub mod results;
pub mod sources;

pub use jobs::{JobRow, WorkItem};
pub use outbox::{Outbox, Owed};
pub use posts::{PostRow, MAX_INGEST_STATEMENT_BYTES};
pub use results::{Committed, NewResult, ResultRow};

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// A pool on one of the two backends. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Connection settings beyond the URL.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// Postgres only: use (and create) this schema; tests isolate themselves this way.
    pub pg_schema: Option<String>,
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
}
