//! The one way a post gets in, for every source (folders, feeds, the ingest queue, backfills
//! and `POST /v1/posts`):
//!
//! - [`PostDraft`] → [`Ingestor::check`]: the same rules for every source (lengths, the image
//!   URL's scheme and literal address, the bytes' magic, the caption's length).
//! - [`Ingestor::ingest`] / [`Ingestor::ingest_many`]: commit the post and, if it is new, its
//!   job; then hand the job to the queue. Posts are unique per (source, external id), so
//!   seeing the same thing twice never makes a second job.
//! - [`Ingestor::submit`]: the API's variant, which also reports a known post's job and hands
//!   it over again while it is still `pending`.
use base64::Engine;
use hashtale_core::{metrics, Error, Result};
use hashtale_fetch::{FetchConfig, Fetcher};
use hashtale_queue::JobQueue;
use hashtale_store::{sha256_hex, Store};
use hashtale_types::{
    ImageSource, IngestMessage, Ingested, JobMessage, JobState, NewPost, MAX_CAPTION_CHARS,
};

/// Longest source name and external id accepted.
pub const MAX_SOURCE_CHARS: usize = 200;
pub const MAX_EXTERNAL_ID_CHARS: usize = 500;

/// A post as an outsider sends it, before it is checked.
#[derive(Debug, Clone)]
pub struct PostDraft {
    /// The sender's name for its source; `default` when absent.
    pub source: Option<String>,
    /// The sender's id of the post; the image URL, or the bytes' SHA-256, when absent.
    pub external_id: Option<String>,
    pub image: ImageSource,
    pub caption: Option<String>,
}

impl PostDraft {
    /// A message of the ingest queue (or a JSON body of the API): exactly one of `image_url`
    /// and `image_base64`.
    pub fn from_message(m: IngestMessage) -> Result<Self> {
        Self::from_fields(
            Some(m.source),
            Some(m.external_id),
            m.image_url,
            m.image_base64,
            m.caption,
        )
    }

    /// A post sent as JSON fields: exactly one of `image_url` and `image_base64` (standard
    /// base64, padded).
    pub fn from_fields(
        source: Option<String>,
        external_id: Option<String>,
        image_url: Option<String>,
        image_base64: Option<String>,
        caption: Option<String>,
    ) -> Result<Self> {
        let image = match (image_url, image_base64) {
            (Some(u), None) => ImageSource::Url(u),
            (None, Some(b)) => ImageSource::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|e| Error::BadInput(format!("image_base64: {e}")))?,
            ),
            _ => {
                return Err(Error::BadInput(
                    "exactly one of image_url and image_base64 is required".into(),
                ))
            }
        };
        Ok(PostDraft {
            source,
            external_id,
            image,
            caption,
        })
    }
}

/// What [`Ingestor::submit`] did with a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub post_id: i64,
    /// The post's job (0 when it could not be read back after the commit).
    pub job_id: i64,
    /// Whether the post was new (it made the job).
    pub new: bool,
    /// Whether the job is with the queue (false: it stays `pending` until the broker is back).
    pub queued: bool,
}

/// Checks posts, stores them and enqueues the jobs of new ones.
#[derive(Clone)]
pub struct Ingestor {
    pub store: Store,
    pub queue: JobQueue,
    fetcher: Fetcher,
}

impl Ingestor {
    /// An ingestor checking image URLs by `fetch`'s rules.
    pub fn new(store: Store, queue: JobQueue, fetch: &FetchConfig) -> Result<Self> {
        Ok(Self {
            store,
            queue,
            fetcher: Fetcher::new(fetch)?,
        })
    }

    /// The fetcher whose rules the ingestor checks image URLs by; the sources that fetch (feeds,
    /// the ratings page's images) share it rather than build a second from the same config.
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// The checks every outsider's post passes, the same whichever way it came in: a post of
    /// source kind `kind` (`api`, `ingest`, …), or a [`Error::BadInput`] saying what is wrong.
    /// An image URL is checked as far as it can be before fetching (scheme, a literal address);
    /// the worker checks the resolved addresses when it fetches.
    pub fn check(&self, kind: &str, draft: PostDraft) -> Result<NewPost> {
        let PostDraft {
            source,
            external_id,
            image,
            caption,
        } = draft;
        if caption
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_CAPTION_CHARS)
        {
            return Err(Error::BadInput(format!(
                "caption must be at most {MAX_CAPTION_CHARS} characters"
            )));
        }
        let source = source.unwrap_or_else(|| "default".into());
        if source.is_empty() || source.chars().count() > MAX_SOURCE_CHARS {
            return Err(Error::BadInput(format!(
                "source must be 1 to {MAX_SOURCE_CHARS} characters"
            )));
        }
        let external_id = match (external_id, &image) {
            (Some(e), _) if !e.is_empty() && e.chars().count() <= MAX_EXTERNAL_ID_CHARS => e,
            (Some(_), _) => {
                return Err(Error::BadInput(format!(
                    "external_id must be 1 to {MAX_EXTERNAL_ID_CHARS} characters"
                )))
            }
            (None, ImageSource::Url(u)) => u.clone(),
            (None, ImageSource::Bytes(b)) => sha256_hex(b),
        };
        match &image {
            ImageSource::Url(u) => {
                self.fetcher.check(u)?;
            }
            ImageSource::Bytes(b) => {
                hashtale_fetch::sniff(b).map_err(|e| Error::Unsupported(e.to_string()))?;
            }
        }
        Ok(NewPost {
            source: format!("{kind}:{source}"),
            source_kind: kind.to_string(),
            external_id,
            image,
            caption,
        })
    }

    /// Stores one post; if it is new, its job is committed and then handed to the queue.
    /// Succeeds once the post is committed: a job the broker could not take now stays
    /// `pending` and is published when it is back (see [`JobQueue::maintain`]).
    pub async fn ingest(&self, post: &NewPost) -> Result<Ingested> {
        let r = self.ingest_only(post).await?;
        self.enqueue(std::slice::from_ref(&r)).await;
        Ok(r)
    }

    /// Stores a post without publishing its job (call [`Ingestor::enqueue`] for a chunk).
    pub async fn ingest_only(&self, post: &NewPost) -> Result<Ingested> {
        let r = self.store.ingest(post, self.queue.initial_state()).await?;
        if r.job_id.is_some() {
            metrics::posts_ingested(1);
        }
        Ok(r)
    }

    /// Stores many posts in one transaction and enqueues the new ones' jobs.
    pub async fn ingest_many(&self, posts: &[NewPost]) -> Result<Vec<Ingested>> {
        let r = self
            .store
            .ingest_many(posts, self.queue.initial_state())
            .await?;
        let new = r.iter().filter(|i| i.job_id.is_some()).count();
        metrics::posts_ingested(new as u64);
        self.enqueue(&r).await;
        Ok(r)
    }

    /// Stores one post and says where its job stands. A post already known reports its job; a
    /// job of it still `pending` (its first enqueue failed) is handed over again now, since the
    /// sender is retrying. Errors after the commit are logged, not returned: the post is in.
    pub async fn submit(&self, post: &NewPost) -> Result<Submitted> {
        let r = self.ingest_only(post).await?;
        if let Some(job_id) = r.job_id {
            let queued = self.enqueue(std::slice::from_ref(&r)).await;
            return Ok(Submitted {
                post_id: r.post_id,
                job_id,
                new: true,
                queued,
            });
        }
        let known = Submitted {
            post_id: r.post_id,
            job_id: 0,
            new: false,
            queued: false,
        };
        let job = match self.store.job_for_post(r.post_id).await {
            Ok(Some(job)) => job,
            Ok(None) => return Ok(known),
            Err(e) => {
                tracing::warn!("reading the job of post {}: {e}", r.post_id);
                return Ok(known);
            }
        };
        let queued = if job.state == JobState::Pending {
            self.enqueue(&[Ingested {
                post_id: r.post_id,
                job_id: Some(job.id),
            }])
            .await
        } else {
            true
        };
        Ok(Submitted {
            job_id: job.id,
            queued,
            ..known
        })
    }

    /// Hands a chunk of new jobs to the queue; returns whether they were taken. Jobs it could
    /// not hand over (the broker is away) stay `pending` in the store, which is what publishes
    /// them later: a failure here is logged, not returned.
    pub async fn enqueue(&self, ingested: &[Ingested]) -> bool {
        let msgs: Vec<JobMessage> = ingested
            .iter()
            .filter_map(|r| {
                r.job_id.map(|job_id| JobMessage {
                    job_id,
                    post_id: r.post_id,
                })
            })
            .collect();
        match self.queue.enqueue(&self.store, &msgs).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    "{} new jobs committed but not queued yet ({e}); they are published once the broker is back",
                    msgs.len()
                );
                false
            }
        }
    }
}
