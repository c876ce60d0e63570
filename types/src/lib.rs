//! The one schema every hashtale stage shares. It depends on nothing of ours, and everything
//! of ours may depend on it.
//!
//! - [`messages`]: what travels between stages: posts as sources see them, the jobs and ingest
//!   queues' bodies, the results exchange's body, per-stage timings, timestamps.
//! - [`result`]: what the models say about one image ([`ImageResult`], [`ScoredTag`],
//!   [`Suggestion`]), as the worker stores it, the API serves it and the ratings page shows it.
//! - [`job`]: a job's life ([`JobState`]).
pub mod job;
pub mod messages;
pub mod result;

pub use job::JobState;
pub use messages::{
    capped_caption, now_ms, ImageSource, IngestMessage, Ingested, JobMessage, NewPost,
    ResultMessage, Timings, MAX_CAPTION_CHARS,
};
pub use result::{ImageResult, ScoredTag, Suggestion};
