//! Readers for the datasets hashtale trains and evaluates on.
//!
//! Every reader yields [`Sample`]s: an image path and its tags (lowercase words, printed as
//! `#word`). Malformed lines are errors naming the file and line number.
pub mod harrison;
pub mod tagged_folder;

use std::path::PathBuf;

/// One image and its ground-truth tags, in the order the dataset lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub image: PathBuf,
    pub tags: Vec<String>,
}

/// Formats a tag as a hashtag: `dog` → `#dog`.
pub fn hashtag(tag: &str) -> String {
    format!("#{tag}")
}
