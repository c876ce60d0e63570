//! Human ratings of hashtale's results: the three questions and their scales, the rows raters
//! produce, and (in the modules) agreement statistics, reports, charts and exports.
//!
//! Storage lives in `hashtale-store` and the pages in `hashtale-api`; this crate holds no I/O
//! beyond writers for exports.
//!
//! - `lib.rs`: the rows raters produce ([`RatingRow`]).
//! - [`questions`]: Q1–Q3 and their scales, worded by the config.
//! - [`stats`]: majority votes and Wilson intervals.
//! - [`agreement`]: Fleiss κ and Krippendorff α (checked against published examples).
//! - [`report`]: per model version and question, with agreement.
//! - [`chart`]: the report as an SVG.
//! - [`export`]: CSV and JSONL, written and read back.
use serde::{Deserialize, Serialize};

pub mod agreement;
pub mod chart;
pub mod export;
pub mod questions;
pub mod report;
pub mod stats;

pub use agreement::{fleiss_kappa, krippendorff_alpha, Agreement, Metric};
pub use chart::distribution_svg;
pub use export::{read_csv, read_jsonl, write_csv, write_jsonl, ExportFormat};
pub use questions::{Question, QuestionSet, Scale};
pub use report::{QuestionAgreement, Report, VersionReport};
pub use stats::{majority, wilson, Proportion};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An answer outside its question's scale, or an unknown question id.
    #[error("invalid answer: {0}")]
    InvalidAnswer(String),
    #[error("{0}")]
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// One stored answer: what the store returns and what reports and exports consume.
///
/// Q1 has one row per hashtag (`item` = the hashtag's position in the result's content hashtags,
/// 0 = top hashtag; `hashtag` = its text); Q2 and Q3 have one row per result with `item` = 0 and
/// `hashtag` = `None`. `value` is an index into the question's scale (Q1: 0 = no, 1 = yes; Q2: 0 = no
/// context, 1 = some, 2 = clear; Q3: 0 = unrelated, 1 = slightly, 2 = strongly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatingRow {
    pub rater_id: i64,
    pub rater_name: String,
    pub result_id: i64,
    pub post_id: i64,
    pub model_version: String,
    /// `q1`, `q2` or `q3` (see [`Question::id`]).
    pub question: String,
    pub item: i32,
    pub hashtag: Option<String>,
    pub value: i32,
    /// Milliseconds since the Unix epoch.
    pub answered_at: i64,
}
