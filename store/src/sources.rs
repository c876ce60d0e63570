//! Sources: their ids, feed validators (ETag, Last-Modified) and backfill progress.

use sqlx::Row;

use hashtale_core::Result;
use hashtale_types::now_ms;

use crate::Store;

impl Store {
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
