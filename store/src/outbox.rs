//! The outbox: committed results owe their message on the results exchange and their
//! webhook call until these are confirmed (`published_at`, `webhook_sent_at` NULL).

use sqlx::types::Json;
use sqlx::{QueryBuilder, Row};

use hashtale_core::Result;
use hashtale_types::{now_ms, ImageResult, ResultMessage};

use crate::{push_id_list, Store};

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

impl Store {
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
        on_pool!(self, p => {
            let mut q = QueryBuilder::new(format!("UPDATE results SET {col} = "));
            q.push_bind(now_ms()).push(format!(" WHERE {col} IS NULL AND id IN "));
            push_id_list(&mut q, result_ids);
            q.build().execute(p).await?;
        });
        Ok(())
    }
}
