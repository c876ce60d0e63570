//! Job rows: publishing state (`pending` → `queued`), starting, failing, reading, counting.

use serde::Serialize;
use sqlx::{QueryBuilder, Row};

use hashtale_core::{Error, Result};
use hashtale_types::{now_ms, ImageSource, JobState};

use crate::{parse_job_state, push_id_list, Store};

/// A job: its state, attempts and last error. Times are ms since the Unix epoch.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = Job)]
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

impl Store {
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
        on_pool!(self, p => {
            let mut q = QueryBuilder::new("UPDATE jobs SET state = ");
            q.push_bind(JobState::Queued.as_str())
                .push(", updated_at = ")
                .push_bind(now_ms())
                .push(" WHERE state = ")
                .push_bind(JobState::Pending.as_str())
                .push(" AND id IN ");
            push_id_list(&mut q, job_ids);
            q.build().execute(p).await?;
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
        // UPDATE … WHERE state NOT IN (done, failed) AND id IN (job_ids)
        fn push_update<'a, DB: sqlx::Database>(
            q: &mut QueryBuilder<'a, DB>,
            now: i64,
            job_ids: &[i64],
        ) where
            i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
            &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        {
            q.push("UPDATE jobs SET state = ")
                .push_bind(JobState::Running.as_str())
                .push(", attempts = attempts + 1, started_at = ")
                .push_bind(now)
                .push(", updated_at = ")
                .push_bind(now)
                .push(" WHERE state NOT IN (")
                .push_bind(JobState::Done.as_str())
                .push(", ")
                .push_bind(JobState::Failed.as_str())
                .push(") AND id IN ");
            push_id_list(q, job_ids);
        }
        let from =
            "FROM jobs j JOIN posts p ON p.id = j.post_id JOIN sources s ON s.id = p.source_id \
                    LEFT JOIN blobs b ON b.sha256 = p.image_sha256";
        let rows = match self {
            // One round trip: the update's RETURNING carries the new state and attempts (the
            // outer SELECT still sees the rows as they were before it).
            Store::Postgres(p) => {
                let mut q = QueryBuilder::new("WITH u AS (");
                push_update(&mut q, now, job_ids);
                q.push(format!(
                    " RETURNING id, state, attempts) \
                     SELECT j.id, j.post_id, COALESCE(u.attempts, j.attempts), COALESCE(u.state, j.state), \
                     s.name, p.external_id, p.image_url, b.bytes {from} LEFT JOIN u ON u.id = j.id \
                     WHERE j.id IN "
                ));
                push_id_list(&mut q, job_ids);
                q.push(" ORDER BY j.id");
                let rows = q.build().fetch_all(p).await?;
                rows.iter()
                    .map(|r| work_item!(r))
                    .collect::<Result<Vec<_>>>()?
            }
            Store::Sqlite(p) => {
                let mut tx = p.begin().await?;
                let mut q = QueryBuilder::new("");
                push_update(&mut q, now, job_ids);
                q.build().execute(&mut *tx).await?;
                let mut q = QueryBuilder::new(format!(
                    "SELECT j.id, j.post_id, j.attempts, j.state, s.name, p.external_id, p.image_url, b.bytes \
                     {from} WHERE j.id IN "
                ));
                push_id_list(&mut q, job_ids);
                q.push(" ORDER BY j.id");
                let rows = q.build().fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows.iter()
                    .map(|r| work_item!(r))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        Ok(rows)
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
}
