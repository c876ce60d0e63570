//! Results: committing them (with what they owe, see [`crate::outbox`]) and reading them back.

use serde::Serialize;
use sqlx::types::Json;
use sqlx::{QueryBuilder, Row};

use hashtale_core::{Error, Result};
use hashtale_types::{now_ms, ImageResult, JobState, Timings};

use crate::{push_id_list, Owed, Store};

/// A stored result of the models.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = StoredResult)]
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

/// One finished job, ready to be committed.
#[derive(Debug, Clone)]
pub struct NewResult {
    pub job_id: i64,
    pub post_id: i64,
    pub output: ImageResult,
    pub story: Option<String>,
    pub timings: Timings,
}

/// A result row created by [`Store::complete_with`] (an existing result is not reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub result_id: i64,
    pub post_id: i64,
    pub job_id: i64,
}

impl Store {
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
        let mv = "INSERT INTO model_versions (version, first_seen) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING";
        // The statements' texts, built per backend (macros, as the builder's type differs).
        macro_rules! push_insert {
            ($q:expr) => {{
                $q.push(
                    "INSERT INTO results (post_id, job_id, model_version, output, story, timings, \
                     created_at, published_at, webhook_sent_at) ",
                );
                $q.push_values(results, |mut row, r| {
                    row.push_bind(r.post_id)
                        .push_bind(r.job_id)
                        .push_bind(model_version)
                        .push_bind(Json(&r.output))
                        .push_bind(&r.story)
                        .push_bind(Json(&r.timings))
                        .push_bind(now)
                        .push_bind(published_at)
                        .push_bind(webhook_sent_at);
                });
                $q.push(" ON CONFLICT (post_id, model_version) DO NOTHING RETURNING id, post_id, job_id");
            }};
        }
        macro_rules! push_update {
            ($q:expr) => {{
                $q.push("UPDATE jobs SET state = ")
                    .push_bind(JobState::Done.as_str())
                    .push(", last_error = NULL, finished_at = ")
                    .push_bind(now)
                    .push(", updated_at = ")
                    .push_bind(now)
                    .push(" WHERE id IN ");
                let ids: Vec<i64> = results.iter().map(|r| r.job_id).collect();
                push_id_list(&mut $q, &ids);
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
                let mut q = QueryBuilder::new(
                    "WITH mv AS (INSERT INTO model_versions (version, first_seen) VALUES (",
                );
                q.push_bind(model_version)
                    .push(", ")
                    .push_bind(now)
                    .push(") ON CONFLICT (version) DO NOTHING), ins AS (");
                push_insert!(q);
                q.push("), upd AS (");
                push_update!(q);
                q.push(") SELECT id, post_id, job_id FROM ins");
                committed!(q.build().fetch_all(p).await?)
            }
            Store::Sqlite(p) => {
                let mut tx = p.begin().await?;
                sqlx::query(mv)
                    .bind(model_version)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let mut q = QueryBuilder::new("");
                push_insert!(q);
                let rows = q.build().fetch_all(&mut *tx).await?;
                let mut q = QueryBuilder::new("");
                push_update!(q);
                q.build().execute(&mut *tx).await?;
                tx.commit().await?;
                committed!(rows)
            }
        };
        out.sort_by_key(|c| c.result_id);
        Ok(out)
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
}
