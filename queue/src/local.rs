//! The in-process queue: the jobs table is the queue. The SQL only this queue runs (claiming
//! due jobs, waking for the next one, recovering after a restart) lives here, on the store's
//! pools.

use std::sync::Arc;

use sqlx::Row;
use tokio::sync::Notify;

use hashtale_core::Result;
use hashtale_store::{on_pool, Store};
use hashtale_types::{now_ms, JobState};

/// A job as the local queue hands it out; `attempts` are those made before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub job_id: i64,
    pub post_id: i64,
    pub attempts: i64,
}

/// The in-process queue: the jobs table is the queue (a restart resumes pending work);
/// a `Notify` wakes the worker as soon as a job is added.
#[derive(Clone)]
pub struct LocalQueue {
    pub store: Store,
    pub(crate) wake: Arc<Notify>,
}

impl LocalQueue {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes a waiting consumer.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Claims up to `n` due jobs (marking them running so no other consumer takes them; the
    /// worker's [`Store::start_jobs`] counts the attempt, as for RabbitMQ).
    pub async fn claim(&self, n: i64) -> Result<Vec<Claimed>> {
        let now = now_ms();
        // Postgres: concurrent claimers skip each other's rows instead of waiting on them.
        // SQLite has one writer at a time, so the statement alone is enough.
        let lock = match &self.store {
            Store::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Store::Sqlite(_) => "",
        };
        let sql = format!(
            "UPDATE jobs SET state = $1, updated_at = $2 \
             WHERE id IN (SELECT id FROM jobs WHERE state = $3 AND available_at <= $2 ORDER BY available_at, id LIMIT $4{lock}) \
             RETURNING id, post_id, attempts"
        );
        on_pool!(&self.store, p => {
            let rows = sqlx::query(&sql).bind(JobState::Running.as_str()).bind(now).bind(JobState::Queued.as_str()).bind(n).fetch_all(p).await?;
            let mut v: Vec<Claimed> = rows.iter().map(|r| Ok(Claimed {
                job_id: r.try_get(0)?, post_id: r.try_get(1)?, attempts: r.try_get(2)?,
            })).collect::<Result<_>>()?;
            v.sort_by_key(|c| c.job_id);
            Ok(v)
        })
    }

    /// At start: jobs left running (or pending) by a previous process go back to the queue.
    /// Call it only when no other process serves this store's local queue.
    pub async fn requeue_running(&self) -> Result<u64> {
        on_pool!(&self.store, p => {
            let r = sqlx::query("UPDATE jobs SET state = $1, updated_at = $2 WHERE state IN ($3, $4)")
                .bind(JobState::Queued.as_str()).bind(now_ms()).bind(JobState::Running.as_str()).bind(JobState::Pending.as_str()).execute(p).await?;
            Ok(r.rows_affected())
        })
    }

    /// The earliest `available_at` of queued jobs (to sleep until then).
    pub async fn next_due(&self) -> Result<Option<i64>> {
        on_pool!(&self.store, p => {
            let row = sqlx::query("SELECT MIN(available_at) FROM jobs WHERE state = $1")
                .bind(JobState::Queued.as_str()).fetch_one(p).await?;
            Ok(row.try_get::<Option<i64>, _>(0)?)
        })
    }
}
