//! Storage of human ratings (issue 5): raters, the assignment of results to raters, their
//! answers, and the rows that reports and exports read. docs/ratings.md explains the design.
//!
//! Each rateable result has a `rating_slots` row whose `taken` counts its open and answered
//! assignments. Taking an item is a conditional `UPDATE … SET taken = taken + 1 WHERE taken < k`
//! followed by the assignment insert, in one transaction: on Postgres the row lock serialises
//! raters racing for the same result, on SQLite the database write lock does, so no result ever
//! has more than k raters. `UNIQUE (result_id, rater_id)` keeps a rater from meeting a result twice.
//!
//! Transactions that read before they write start with a write (a no-op `UPDATE`): it takes the
//! row lock on Postgres and the write lock on SQLite up front, where a later upgrade could fail.
use hashtale_ratings::RatingRow;
use serde::Serialize;
use sqlx::types::Json;
use sqlx::Row;

use crate::{ResultRow, Store};
use hashtale_core::{Error, Result};
use hashtale_types::now_ms;

/// Assignment states, as stored.
pub mod assignment_state {
    /// Shown to the rater, not yet answered (holds one of the result's k slots).
    pub const ASSIGNED: &str = "assigned";
    pub const ANSWERED: &str = "answered";
    /// The rater passed; the slot went back to the pool.
    pub const SKIPPED: &str = "skipped";
    /// Open longer than `ratings.assignment_ttl_s` (or the rater was revoked); slot given back.
    pub const EXPIRED: &str = "expired";
}
use assignment_state::{ANSWERED, ASSIGNED, EXPIRED, SKIPPED};

/// A rater (the token itself is never stored, only its SHA-256).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rater {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A rater with their assignment counts (`hashtale raters list`, the admin page).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RaterSummary {
    #[serde(flatten)]
    pub rater: Rater,
    pub answered: i64,
    pub skipped: i64,
    pub open: i64,
}

/// One result shown to one rater.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Assignment {
    pub id: i64,
    pub result_id: i64,
    pub rater_id: i64,
    pub state: String,
    pub assigned_at: i64,
    pub answered_at: Option<i64>,
}

/// How the next item for a rater is chosen.
#[derive(Debug, Clone)]
pub struct Sampling {
    /// Distinct raters per result.
    pub k: i64,
    /// Results with the lowest top-hashtag score first.
    pub favour_low_confidence: bool,
    /// Results of this model version first.
    pub prefer_model_version: Option<String>,
    /// Open assignments older than this go back to the pool (`None`: never).
    pub ttl_ms: Option<i64>,
}

/// An answer to store (already validated against the question's scale by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAnswer {
    /// `q1`, `q2` or `q3`.
    pub question: String,
    pub item: i32,
    pub hashtag: Option<String>,
    pub value: i32,
}

/// What the rating page shows for an assignment.
#[derive(Debug, Clone)]
pub struct RatingItem {
    pub assignment: Assignment,
    pub result: ResultRow,
    pub image_url: Option<String>,
    pub image_sha256: Option<String>,
}

/// What became of a submitted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    Saved,
    /// No such assignment for this rater (never reveal whether it exists for someone else).
    NotYours,
    /// The assignment can no longer be answered; the text says why.
    Closed(String),
}

/// Rating coverage for the admin page.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RatingProgress {
    /// Results that can be rated.
    pub results: i64,
    /// Results answered by k raters.
    pub complete: i64,
    /// Answered assignments.
    pub answered: i64,
    /// Open assignments.
    pub open: i64,
}

const ASSIGNMENT_COLS: &str = "id, result_id, rater_id, state, assigned_at, answered_at";

macro_rules! assignment_row {
    ($r:expr) => {
        Ok::<_, Error>(Assignment {
            id: $r.try_get(0)?,
            result_id: $r.try_get(1)?,
            rater_id: $r.try_get(2)?,
            state: $r.try_get(3)?,
            assigned_at: $r.try_get(4)?,
            answered_at: $r.try_get(5)?,
        })
    };
}

macro_rules! rater_row {
    ($r:expr) => {
        Ok::<_, Error>(Rater {
            id: $r.try_get(0)?,
            name: $r.try_get(1)?,
            created_at: $r.try_get(2)?,
            revoked_at: $r.try_get(3)?,
        })
    };
}

/// The model's confidence in a result, for sampling: its top hashtag score (0 without hashtags).
pub fn result_confidence(output: &hashtale_types::ImageResult) -> f64 {
    output
        .hashtags
        .iter()
        .map(|t| f64::from(t.score))
        .filter(|s| s.is_finite())
        .fold(0.0, f64::max)
}

/// Outcome of one attempt at taking a slot.
enum Take {
    Took(Assignment),
    /// No slot left, or the rater already met this result or holds an open item.
    Refused,
}

impl Store {
    /// Adds a rater known by the SHA-256 (hex) of their token.
    pub async fn add_rater(&self, name: &str, token_sha256: &str) -> Result<Rater> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(Error::BadInput(
                "a rater's name must be 1 to 100 printable characters".into(),
            ));
        }
        let now = now_ms();
        on_pool!(self, p => {
            let row = sqlx::query(
                "INSERT INTO raters (name, token_sha256, created_at) VALUES ($1, $2, $3) \
                 RETURNING id, name, created_at, revoked_at")
                .bind(name).bind(token_sha256).bind(now).fetch_one(p).await?;
            rater_row!(row)
        })
    }

    /// The active (not revoked) rater whose token hashes to `token_sha256`.
    pub async fn rater_by_token_sha256(&self, token_sha256: &str) -> Result<Option<Rater>> {
        on_pool!(self, p => {
            let row = sqlx::query(
                "SELECT id, name, created_at, revoked_at FROM raters \
                 WHERE token_sha256 = $1 AND revoked_at IS NULL")
                .bind(token_sha256).fetch_optional(p).await?;
            row.map(|r| rater_row!(r)).transpose()
        })
    }

    /// Every rater, revoked ones included, with their assignment counts.
    pub async fn raters(&self) -> Result<Vec<RaterSummary>> {
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT r.id, r.name, r.created_at, r.revoked_at, \
                   COALESCE(SUM(CASE WHEN a.state = $1 THEN 1 ELSE 0 END), 0), \
                   COALESCE(SUM(CASE WHEN a.state = $2 THEN 1 ELSE 0 END), 0), \
                   COALESCE(SUM(CASE WHEN a.state = $3 THEN 1 ELSE 0 END), 0) \
                 FROM raters r LEFT JOIN rating_assignments a ON a.rater_id = r.id \
                 GROUP BY r.id, r.name, r.created_at, r.revoked_at ORDER BY r.id")
                .bind(ANSWERED).bind(SKIPPED).bind(ASSIGNED).fetch_all(p).await?;
            rows.iter().map(|r| Ok(RaterSummary {
                rater: rater_row!(r)?,
                answered: r.try_get(4)?,
                skipped: r.try_get(5)?,
                open: r.try_get(6)?,
            })).collect()
        })
    }

    /// Revokes the active rater with this id or name (the token stops working at once) and gives
    /// their open item back to the pool. `None`: no such active rater; a name shared by several
    /// active raters is refused (use the id).
    pub async fn revoke_rater(&self, id_or_name: &str) -> Result<Option<Rater>> {
        let by_id = id_or_name.parse::<i64>().ok();
        let found: Vec<Rater> = on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT id, name, created_at, revoked_at FROM raters \
                 WHERE revoked_at IS NULL AND (id = $1 OR name = $2) ORDER BY id")
                .bind(by_id.unwrap_or(-1)).bind(id_or_name).fetch_all(p).await?;
            rows.iter().map(|r| rater_row!(r)).collect::<Result<_>>()?
        });
        // An exact id wins over a rater whose name happens to be that number.
        let target = match (by_id, found.as_slice()) {
            (_, []) => return Ok(None),
            (_, [one]) => one.clone(),
            (Some(id), many) if many.iter().any(|r| r.id == id) => {
                many.iter().find(|r| r.id == id).cloned().unwrap()
            }
            (_, many) => {
                return Err(Error::BadInput(format!(
                    "{} active raters are named {id_or_name:?}; revoke by id ({})",
                    many.len(),
                    many.iter()
                        .map(|r| r.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        };
        let now = now_ms();
        let open: Vec<i64> = on_pool!(self, p => {
            sqlx::query("UPDATE raters SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now).bind(target.id).execute(p).await?;
            let rows = sqlx::query("SELECT id FROM rating_assignments WHERE rater_id = $1 AND state = $2")
                .bind(target.id).bind(ASSIGNED).fetch_all(p).await?;
            rows.iter().map(|r| Ok(r.try_get::<i64, _>(0)?)).collect::<Result<_>>()?
        });
        for id in open {
            self.release_assignment(id, ASSIGNED, EXPIRED).await?;
        }
        Ok(Some(Rater {
            revoked_at: Some(now),
            ..target
        }))
    }

    /// A server secret shared by every API instance: the stored one, or `candidate` (random bytes
    /// from the caller) stored on first use.
    pub async fn ratings_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        on_pool!(self, p => {
            sqlx::query("INSERT INTO rating_secrets (name, value, created_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (name) DO NOTHING")
                .bind(name).bind(candidate).bind(now_ms()).execute(p).await?;
            let row = sqlx::query("SELECT value FROM rating_secrets WHERE name = $1")
                .bind(name).fetch_one(p).await?;
            Ok(row.try_get::<Vec<u8>, _>(0)?)
        })
    }

    /// Makes every stored result rateable (one slot row each, with its confidence); returns how
    /// many were added. Cheap when nothing is new; callers run it before handing out items.
    pub async fn sync_rating_slots(&self) -> Result<u64> {
        const BATCH: i64 = 500;
        let mut added = 0u64;
        loop {
            let batch: Vec<(i64, String, f64)> = on_pool!(self, p => {
                let rows = sqlx::query(
                    "SELECT r.id, r.model_version, r.output FROM results r \
                     WHERE NOT EXISTS (SELECT 1 FROM rating_slots s WHERE s.result_id = r.id) \
                     ORDER BY r.id LIMIT $1")
                    .bind(BATCH).fetch_all(p).await?;
                rows.iter().map(|r| Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    result_confidence(&r.try_get::<Json<hashtale_types::ImageResult>, _>(2)?.0),
                ))).collect::<Result<_>>()?
            });
            if batch.is_empty() {
                return Ok(added);
            }
            let mut sql = String::from(
                "INSERT INTO rating_slots (result_id, model_version, confidence, taken) VALUES ",
            );
            for i in 0..batch.len() {
                let b = 1 + i * 3;
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("(${b}, ${}, ${}, 0)", b + 1, b + 2));
            }
            sql.push_str(" ON CONFLICT (result_id) DO NOTHING");
            let n = on_pool!(self, p => {
                let mut q = sqlx::query(&sql);
                for (id, version, conf) in &batch {
                    q = q.bind(id).bind(version).bind(conf);
                }
                q.execute(p).await?.rows_affected()
            });
            added += n;
            if (batch.len() as i64) < BATCH {
                return Ok(added);
            }
        }
    }

    /// Moves an assignment from state `from` to `to` and gives its slot back, atomically;
    /// false if it was not in state `from`.
    async fn release_assignment(&self, id: i64, from: &str, to: &str) -> Result<bool> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let row = sqlx::query("UPDATE rating_assignments SET state = $1 WHERE id = $2 AND state = $3 RETURNING result_id")
                .bind(to).bind(id).bind(from).fetch_optional(&mut *tx).await?;
            let Some(row) = row else { return Ok(false) };
            let result_id: i64 = row.try_get(0)?;
            sqlx::query("UPDATE rating_slots SET taken = taken - 1 WHERE result_id = $1 AND taken > 0")
                .bind(result_id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Gives back the slots of items left open since before `cutoff_ms`; returns how many.
    pub async fn expire_rating_assignments(&self, cutoff_ms: i64) -> Result<u64> {
        let ids: Vec<i64> = on_pool!(self, p => {
            let rows = sqlx::query("SELECT id FROM rating_assignments WHERE state = $1 AND assigned_at < $2 ORDER BY id LIMIT 1000")
                .bind(ASSIGNED).bind(cutoff_ms).fetch_all(p).await?;
            rows.iter().map(|r| Ok(r.try_get::<i64, _>(0)?)).collect::<Result<_>>()?
        });
        let mut n = 0;
        for id in ids {
            if self.release_assignment(id, ASSIGNED, EXPIRED).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    pub async fn rating_assignment(&self, id: i64) -> Result<Option<Assignment>> {
        on_pool!(self, p => {
            let row = sqlx::query(&format!("SELECT {ASSIGNMENT_COLS} FROM rating_assignments WHERE id = $1"))
                .bind(id).fetch_optional(p).await?;
            row.map(|r| assignment_row!(r)).transpose()
        })
    }

    /// The rater's open item, if any.
    pub async fn open_rating_assignment(&self, rater_id: i64) -> Result<Option<Assignment>> {
        on_pool!(self, p => {
            let row = sqlx::query(&format!(
                "SELECT {ASSIGNMENT_COLS} FROM rating_assignments WHERE rater_id = $1 AND state = $2 ORDER BY id LIMIT 1"))
                .bind(rater_id).bind(ASSIGNED).fetch_optional(p).await?;
            row.map(|r| assignment_row!(r)).transpose()
        })
    }

    /// The item the rater answered last: the only answered one they may still change.
    pub async fn previous_rating_assignment(&self, rater_id: i64) -> Result<Option<Assignment>> {
        on_pool!(self, p => {
            let row = sqlx::query(&format!(
                "SELECT {ASSIGNMENT_COLS} FROM rating_assignments WHERE rater_id = $1 AND state = $2 \
                 ORDER BY answered_at DESC, id DESC LIMIT 1"))
                .bind(rater_id).bind(ANSWERED).fetch_optional(p).await?;
            row.map(|r| assignment_row!(r)).transpose()
        })
    }

    /// The rater's assignment of a result, in whatever state.
    pub async fn rater_assignment_for_result(
        &self,
        rater_id: i64,
        result_id: i64,
    ) -> Result<Option<Assignment>> {
        on_pool!(self, p => {
            let row = sqlx::query(&format!(
                "SELECT {ASSIGNMENT_COLS} FROM rating_assignments WHERE rater_id = $1 AND result_id = $2"))
                .bind(rater_id).bind(result_id).fetch_optional(p).await?;
            row.map(|r| assignment_row!(r)).transpose()
        })
    }

    /// Every assignment of a rater, oldest first (tests, audits).
    pub async fn rater_assignments(&self, rater_id: i64) -> Result<Vec<Assignment>> {
        on_pool!(self, p => {
            let rows = sqlx::query(&format!(
                "SELECT {ASSIGNMENT_COLS} FROM rating_assignments WHERE rater_id = $1 ORDER BY id"))
                .bind(rater_id).fetch_all(p).await?;
            rows.iter().map(|r| assignment_row!(r)).collect()
        })
    }

    /// The rater's current item: their open one, or a newly taken slot of a result they have not
    /// met (`None`: nothing left for them). Expires stale items first when `sampling.ttl_ms` is set.
    pub async fn next_rating_assignment(
        &self,
        rater_id: i64,
        sampling: &Sampling,
    ) -> Result<Option<Assignment>> {
        if let Some(ttl) = sampling.ttl_ms {
            self.expire_rating_assignments(now_ms() - ttl).await?;
        }
        if let Some(a) = self.open_rating_assignment(rater_id).await? {
            return Ok(Some(a));
        }
        let order = format!(
            "CASE WHEN s.model_version = $3 THEN 0 ELSE 1 END, {}s.taken DESC, s.result_id",
            if sampling.favour_low_confidence {
                "s.confidence, "
            } else {
                ""
            }
        );
        let sql = format!(
            "SELECT s.result_id FROM rating_slots s WHERE s.taken < $1 AND NOT EXISTS \
             (SELECT 1 FROM rating_assignments a WHERE a.result_id = s.result_id AND a.rater_id = $2) \
             ORDER BY {order} LIMIT 16"
        );
        let prefer = sampling.prefer_model_version.clone().unwrap_or_default();
        // Every refused attempt means another rater took a slot or this rater got an item in a
        // parallel request, so this ends; the bound only guards against a logic error.
        for _ in 0..10_000 {
            let candidates: Vec<i64> = on_pool!(self, p => {
                let rows = sqlx::query(&sql).bind(sampling.k).bind(rater_id).bind(&prefer).fetch_all(p).await?;
                rows.iter().map(|r| Ok(r.try_get::<i64, _>(0)?)).collect::<Result<_>>()?
            });
            if candidates.is_empty() {
                return Ok(None);
            }
            for result_id in candidates {
                match self.take_slot(rater_id, result_id, sampling.k).await? {
                    Take::Took(a) => return Ok(Some(a)),
                    Take::Refused => {
                        if let Some(a) = self.open_rating_assignment(rater_id).await? {
                            return Ok(Some(a));
                        }
                    }
                }
            }
        }
        Err(Error::Other(
            "could not assign a rating item after many attempts".into(),
        ))
    }

    /// One slot of `result_id` for `rater_id`, if one is free and the rater may have it.
    async fn take_slot(&self, rater_id: i64, result_id: i64, k: i64) -> Result<Take> {
        let now = now_ms();
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let took = sqlx::query("UPDATE rating_slots SET taken = taken + 1 WHERE result_id = $1 AND taken < $2")
                .bind(result_id).bind(k).execute(&mut *tx).await?.rows_affected();
            if took == 0 {
                return Ok(Take::Refused);
            }
            // Conflicts: the rater met this result already, or holds an open item (partial unique
            // index); either way the transaction is dropped and the slot increment with it.
            let row = sqlx::query(&format!(
                "INSERT INTO rating_assignments (result_id, rater_id, state, assigned_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING RETURNING {ASSIGNMENT_COLS}"))
                .bind(result_id).bind(rater_id).bind(ASSIGNED).bind(now).fetch_optional(&mut *tx).await?;
            let Some(row) = row else { return Ok(Take::Refused) };
            let a = assignment_row!(row)?;
            tx.commit().await?;
            Ok(Take::Took(a))
        })
    }

    /// The rater passes on their open item `assignment_id`: its slot goes back to the pool and
    /// they will not see the result again. False if it is not their open item.
    pub async fn skip_rating_assignment(&self, rater_id: i64, assignment_id: i64) -> Result<bool> {
        match self.rating_assignment(assignment_id).await? {
            Some(a) if a.rater_id == rater_id => {
                self.release_assignment(assignment_id, ASSIGNED, SKIPPED)
                    .await
            }
            _ => Ok(false),
        }
    }

    /// The result, and where its image is, for an assignment.
    pub async fn rating_item(&self, assignment: &Assignment) -> Result<RatingItem> {
        on_pool!(self, p => {
            let r = sqlx::query(
                "SELECT r.id, r.post_id, r.job_id, r.model_version, r.output, r.story, r.timings, r.created_at, \
                   p.image_url, p.image_sha256 \
                 FROM results r JOIN posts p ON p.id = r.post_id WHERE r.id = $1")
                .bind(assignment.result_id).fetch_optional(p).await?
                .ok_or_else(|| Error::NotFound(format!("result {}", assignment.result_id)))?;
            Ok(RatingItem {
                assignment: assignment.clone(),
                result: ResultRow {
                    id: r.try_get(0)?,
                    post_id: r.try_get(1)?,
                    job_id: r.try_get(2)?,
                    model_version: r.try_get(3)?,
                    output: r.try_get::<Json<hashtale_types::ImageResult>, _>(4)?.0,
                    story: r.try_get(5)?,
                    timings: r.try_get::<Json<hashtale_types::Timings>, _>(6)?.0,
                    created_at: r.try_get(7)?,
                },
                image_url: r.try_get(8)?,
                image_sha256: r.try_get(9)?,
            })
        })
    }

    /// The stored bytes of an image (uploads, watched folders), by SHA-256.
    pub async fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        on_pool!(self, p => {
            let row = sqlx::query("SELECT bytes FROM blobs WHERE sha256 = $1")
                .bind(sha256).fetch_optional(p).await?;
            row.map(|r| Ok(r.try_get::<Vec<u8>, _>(0)?)).transpose()
        })
    }

    /// The stored answers of an assignment, as (question, item, value), to prefill a form.
    pub async fn assignment_answers(&self, assignment_id: i64) -> Result<Vec<(String, i32, i32)>> {
        on_pool!(self, p => {
            let rows = sqlx::query("SELECT question, item, value FROM rating_answers WHERE assignment_id = $1 ORDER BY question, item")
                .bind(assignment_id).fetch_all(p).await?;
            rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
        })
    }

    /// Stores the rater's answers to their assignment: their open item; their previous one
    /// (a fixed mis-click replaces its answers); or an item that expired, if one of its k slots
    /// is still free. Everything else is refused.
    pub async fn submit_rating(
        &self,
        rater_id: i64,
        assignment_id: i64,
        answers: &[NewAnswer],
        k: i64,
    ) -> Result<SubmitOutcome> {
        if answers.is_empty() {
            return Err(Error::BadInput("no answers".into()));
        }
        let now = now_ms();
        let mut ins = String::from(
            "INSERT INTO rating_answers (assignment_id, rater_id, result_id, model_version, question, item, hashtag, value, answered_at) VALUES ",
        );
        for i in 0..answers.len() {
            let b = 6 + i * 4;
            if i > 0 {
                ins.push(',');
            }
            ins.push_str(&format!(
                "($1, $2, $3, $4, ${b}, ${}, ${}, ${}, $5)",
                b + 1,
                b + 2,
                b + 3
            ));
        }
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            // The no-op write locks the assignment first (see the module comment).
            let row = sqlx::query(
                "UPDATE rating_assignments SET state = state WHERE id = $1 AND rater_id = $2 RETURNING result_id, state")
                .bind(assignment_id).bind(rater_id).fetch_optional(&mut *tx).await?;
            let Some(row) = row else { return Ok(SubmitOutcome::NotYours) };
            let result_id: i64 = row.try_get(0)?;
            let st: String = row.try_get(1)?;
            match st.as_str() {
                ASSIGNED => {}
                ANSWERED => {
                    let last = sqlx::query(
                        "SELECT id FROM rating_assignments WHERE rater_id = $1 AND state = $2 \
                         ORDER BY answered_at DESC, id DESC LIMIT 1")
                        .bind(rater_id).bind(ANSWERED).fetch_one(&mut *tx).await?;
                    if last.try_get::<i64, _>(0)? != assignment_id {
                        return Ok(SubmitOutcome::Closed(
                            "only your previous item can still be changed".into()));
                    }
                }
                EXPIRED => {
                    let took = sqlx::query("UPDATE rating_slots SET taken = taken + 1 WHERE result_id = $1 AND taken < $2")
                        .bind(result_id).bind(k).execute(&mut *tx).await?.rows_affected();
                    if took == 0 {
                        return Ok(SubmitOutcome::Closed(
                            "this item was open too long and has gone to other raters".into()));
                    }
                }
                _ => return Ok(SubmitOutcome::Closed("you skipped this item".into())),
            }
            let version: String = sqlx::query("SELECT model_version FROM results WHERE id = $1")
                .bind(result_id).fetch_one(&mut *tx).await?.try_get(0)?;
            sqlx::query("DELETE FROM rating_answers WHERE assignment_id = $1")
                .bind(assignment_id).execute(&mut *tx).await?;
            let mut q = sqlx::query(&ins).bind(assignment_id).bind(rater_id).bind(result_id).bind(&version).bind(now);
            for a in answers {
                q = q.bind(&a.question).bind(a.item).bind(&a.hashtag).bind(a.value);
            }
            q.execute(&mut *tx).await?;
            sqlx::query("UPDATE rating_assignments SET state = $1, answered_at = $2 WHERE id = $3")
                .bind(ANSWERED).bind(now).bind(assignment_id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(SubmitOutcome::Saved)
        })
    }

    /// Every stored answer (of one model version, if given) as report/export rows, ordered by
    /// result, rater, question and item.
    pub async fn rating_rows(&self, model_version: Option<&str>) -> Result<Vec<RatingRow>> {
        let filter = if model_version.is_some() {
            "WHERE a.model_version = $1 "
        } else {
            ""
        };
        let sql = format!(
            "SELECT a.rater_id, r.name, a.result_id, res.post_id, a.model_version, a.question, a.item, \
               a.hashtag, a.value, a.answered_at \
             FROM rating_answers a JOIN raters r ON r.id = a.rater_id JOIN results res ON res.id = a.result_id \
             {filter}ORDER BY a.result_id, a.rater_id, a.question, a.item"
        );
        on_pool!(self, p => {
            let mut q = sqlx::query(&sql);
            if let Some(v) = model_version {
                q = q.bind(v);
            }
            let rows = q.fetch_all(p).await?;
            rows.iter().map(|r| Ok(RatingRow {
                rater_id: r.try_get(0)?,
                rater_name: r.try_get(1)?,
                result_id: r.try_get(2)?,
                post_id: r.try_get(3)?,
                model_version: r.try_get(4)?,
                question: r.try_get(5)?,
                item: r.try_get(6)?,
                hashtag: r.try_get(7)?,
                value: r.try_get(8)?,
                answered_at: r.try_get(9)?,
            })).collect()
        })
    }

    /// How far rating has come, for k raters per result.
    pub async fn rating_progress(&self, k: i64) -> Result<RatingProgress> {
        on_pool!(self, p => {
            let results: i64 = sqlx::query("SELECT COUNT(*) FROM rating_slots").fetch_one(p).await?.try_get(0)?;
            let complete: i64 = sqlx::query(
                "SELECT COUNT(*) FROM (SELECT result_id FROM rating_assignments WHERE state = $1 \
                 GROUP BY result_id HAVING COUNT(*) >= $2) t")
                .bind(ANSWERED).bind(k).fetch_one(p).await?.try_get(0)?;
            let row = sqlx::query(
                "SELECT COALESCE(SUM(CASE WHEN state = $1 THEN 1 ELSE 0 END), 0), \
                   COALESCE(SUM(CASE WHEN state = $2 THEN 1 ELSE 0 END), 0) FROM rating_assignments")
                .bind(ANSWERED).bind(ASSIGNED).fetch_one(p).await?;
            Ok(RatingProgress { results, complete, answered: row.try_get(0)?, open: row.try_get(1)? })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_is_the_top_score() {
        let tag = |tag: &str, score: f32| hashtale_types::ScoredTag {
            tag: tag.into(),
            score,
            attention: vec![],
        };
        let v = hashtale_types::ImageResult {
            hashtags: vec![tag("a", 0.2), tag("b", 0.7)],
            ..Default::default()
        };
        assert!((result_confidence(&v) - 0.7).abs() < 1e-6);
        assert_eq!(result_confidence(&Default::default()), 0.0);
    }
}
