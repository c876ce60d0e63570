//! What travels between stages: posts, queue bodies, the results exchange's body, timings.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ImageResult;

/// Milliseconds since the Unix epoch: every timestamp in the store uses this.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Longest caption accepted (Instagram's limit): the API refuses longer ones, feeds are cut.
pub const MAX_CAPTION_CHARS: usize = 2_200;

/// A caption cut to [`MAX_CAPTION_CHARS`] characters.
pub fn capped_caption(caption: &str) -> String {
    caption.chars().take(MAX_CAPTION_CHARS).collect()
}

/// Where a post's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Fetched by the worker (http/https only, through the safe fetcher).
    Url(String),
    /// Bytes already in hand (upload, watched folder, base64 message); stored by sha256.
    Bytes(Vec<u8>),
}

/// A post as a source sees it, before it is stored.
#[derive(Debug, Clone)]
pub struct NewPost {
    /// Unique name of the source, e.g. `dir:/photos` or `feed:https://…`.
    pub source: String,
    pub source_kind: String,
    pub external_id: String,
    pub image: ImageSource,
    pub caption: Option<String>,
}

/// What `Store::ingest` did with a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub post_id: i64,
    /// The new job, or `None` when the post was already known (known posts make no job).
    pub job_id: Option<i64>,
}

/// The body of a message on the jobs queue.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct JobMessage {
    pub job_id: i64,
    pub post_id: i64,
}

/// A JSON message on the ingest queue (`POST /v1/posts` takes the same fields, with `source`
/// and `external_id` optional).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct IngestMessage {
    pub source: String,
    pub external_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

/// Published on the `{prefix}.results` exchange (and POSTed to the webhook) for every result,
/// at least once: after a crash the outbox sweep may send a result again, so consumers
/// deduplicate by `result_id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ResultMessage {
    /// The result's id in the store (0 in messages from before the outbox).
    #[serde(default)]
    pub result_id: i64,
    pub post_id: i64,
    pub job_id: i64,
    pub source: String,
    pub external_id: String,
    pub model_version: String,
    /// The model's whole answer (hashtags, scores, attention maps, story, …).
    pub output: ImageResult,
}

/// Milliseconds spent per stage for one image, stored with its result.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Timings {
    pub fetch_ms: f64,
    pub decode_ms: f64,
    /// The whole batch's model time (shared by every image of the batch).
    pub model_batch_ms: f64,
    pub batch_size: usize,
}
