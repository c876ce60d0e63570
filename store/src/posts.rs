//! Posts: ingesting them (with their image blobs and, for new posts, their jobs) and reading
//! them back.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sqlx::{QueryBuilder, Row};

use hashtale_core::Result;
use hashtale_types::{now_ms, ImageSource, Ingested, JobState, NewPost};

use crate::{sha256_hex, Store};

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

/// A post (without its image bytes).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = Post)]
pub struct PostRow {
    pub id: i64,
    /// `api:NAME`, `dir:FOLDER`, `feed:URL`, … (the API shows a folder's last component only
    /// and a feed URL without credentials).
    pub source: String,
    pub external_id: String,
    pub image_url: Option<String>,
    /// SHA-256 of the stored bytes (uploads, folders).
    pub image_sha256: Option<String>,
    pub caption: Option<String>,
    pub first_seen: i64,
}

impl Store {
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
        let mut source_ids = HashMap::new();
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
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            if !blobs.is_empty() {
                let mut q = QueryBuilder::new("INSERT INTO blobs (sha256, bytes, created_at) ");
                q.push_values(&blobs, |mut row, (sha, bytes)| {
                    row.push_bind(*sha).push_bind(*bytes).push_bind(now);
                });
                q.push(" ON CONFLICT (sha256) DO NOTHING");
                q.build().execute(&mut *tx).await?;
            }
            let mut q = QueryBuilder::new(
                "INSERT INTO posts (source_id, external_id, image_url, image_sha256, caption, first_seen) ",
            );
            q.push_values(posts.iter().zip(&shas), |mut row, (post, sha)| {
                let url = match &post.image {
                    ImageSource::Url(u) => Some(u.as_str()),
                    ImageSource::Bytes(_) => None,
                };
                row.push_bind(source_ids[&post.source])
                    .push_bind(&post.external_id)
                    .push_bind(url)
                    .push_bind(sha.as_deref())
                    .push_bind(&post.caption)
                    .push_bind(now);
            });
            q.push(" ON CONFLICT (source_id, external_id) DO NOTHING RETURNING id, source_id, external_id");
            let rows = q.build().fetch_all(&mut *tx).await?;
            let mut inserted = HashMap::new();
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
                let mut q = QueryBuilder::new(
                    "INSERT INTO jobs (post_id, state, attempts, available_at, created_at, updated_at) ");
                q.push_values(&new_posts, |mut row, id| {
                    row.push_bind(*id)
                        .push_bind(job_state.as_str())
                        .push("0")
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(now);
                });
                q.push(" RETURNING id, post_id");
                let jobs = q.build().fetch_all(&mut *tx).await?;
                let mut by_post = HashMap::new();
                for r in &jobs {
                    by_post.insert(r.try_get::<i64, _>(1)?, r.try_get::<i64, _>(0)?);
                }
                let mut first = HashSet::new();
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
