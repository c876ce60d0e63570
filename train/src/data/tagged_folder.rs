//! The "tagged image folder" layout (Flickr8k and Corel5k here):
//!
//! - `labels.tsv`: `relative/path.jpg<TAB>tag tag …` (an empty tag field is allowed);
//! - `images/…`: the photos;
//! - optional `splits.tsv`: `relative/path.jpg<TAB>train|dev|test`. Without it the whole folder is
//!   one split, `all`.
//!
//! When the folder has a `train` split but no `dev` split, a dev split is carved from train:
//! the images whose path hashes (FNV-1a, 64 bit) to a value below [`CARVED_DEV_FRACTION`] of the
//! range. The carve is deterministic and independent of line order.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::Sample;
use crate::{Error, Result};

/// Share of `train` moved to `dev` when a folder ships no dev split.
pub const CARVED_DEV_FRACTION: f64 = 0.1;

/// A tagged image folder, read into memory.
#[derive(Debug, Clone)]
pub struct TaggedFolder {
    pub root: PathBuf,
    /// Samples with their split name, in `labels.tsv` order.
    pub samples: Vec<(Sample, String)>,
}

fn parse_tsv_line<'a>(path: &Path, line_no: usize, line: &'a str) -> Result<(&'a str, &'a str)> {
    let (name, rest) = line.split_once('\t').ok_or_else(|| Error::Parse {
        path: path.to_path_buf(),
        line: line_no,
        message: "expected `path<TAB>value`".into(),
    })?;
    if name.trim().is_empty() {
        return Err(Error::Parse {
            path: path.to_path_buf(),
            line: line_no,
            message: "empty image path".into(),
        });
    }
    Ok((name.trim(), rest.trim()))
}

impl TaggedFolder {
    /// Reads `labels.tsv` and, when present, `splits.tsv` under `root`.
    pub fn read(root: &Path) -> Result<Self> {
        let labels_path = root.join("labels.tsv");
        let text = std::fs::read_to_string(&labels_path).map_err(|e| Error::io(&labels_path, e))?;
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let (name, tags) = parse_tsv_line(&labels_path, i + 1, line)?;
            let mut seen = Vec::new();
            for t in tags.split_whitespace() {
                let t = t.trim_start_matches('#').to_lowercase();
                if !seen.contains(&t) {
                    seen.push(t);
                }
            }
            samples.push(Sample {
                image: root.join(name),
                tags: seen,
            });
        }

        let splits_path = root.join("splits.tsv");
        let mut split_of: HashMap<PathBuf, String> = HashMap::new();
        let has_splits = splits_path.exists();
        if has_splits {
            let text =
                std::fs::read_to_string(&splits_path).map_err(|e| Error::io(&splits_path, e))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim_end_matches('\r');
                if line.trim().is_empty() {
                    continue;
                }
                let (name, split) = parse_tsv_line(&splits_path, i + 1, line)?;
                if !matches!(split, "train" | "dev" | "test") {
                    return Err(Error::Parse {
                        path: splits_path.clone(),
                        line: i + 1,
                        message: format!("unknown split `{split}` (expected train, dev or test)"),
                    });
                }
                split_of.insert(root.join(name), split.to_string());
            }
        }
        let carve = has_splits
            && split_of.values().any(|s| s == "train")
            && !split_of.values().any(|s| s == "dev");
        let samples = samples
            .into_iter()
            .map(|s| {
                let mut split = if has_splits {
                    split_of
                        .get(&s.image)
                        .cloned()
                        .unwrap_or_else(|| "unlisted".into())
                } else {
                    "all".into()
                };
                if carve && split == "train" {
                    let rel = s.image.strip_prefix(root).unwrap_or(&s.image);
                    let h = hashtale_models::hash::fnv1a(rel.to_string_lossy().as_bytes());
                    if (h as f64) < CARVED_DEV_FRACTION * u64::MAX as f64 {
                        split = "dev".into();
                    }
                }
                (s, split)
            })
            .collect();
        Ok(Self {
            root: root.to_path_buf(),
            samples,
        })
    }

    /// The samples of one split (`all` selects everything), skipping images with no tags.
    pub fn split(&self, name: &str) -> Vec<Sample> {
        self.samples
            .iter()
            .filter(|(s, sp)| (name == "all" || sp == name) && !s.tags.is_empty())
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Names of the splits present, sorted.
    pub fn split_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.samples.iter().map(|(_, s)| s.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn reads_labels_and_splits() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "labels.tsv",
            "images/a.jpg\tdog #Beach dog\r\nimages/b.jpg\t\n\nimages/c.jpg\tsky\n",
        );
        write(
            d.path(),
            "splits.tsv",
            "images/a.jpg\ttrain\nimages/b.jpg\ttrain\nimages/c.jpg\tdev\n",
        );
        let f = TaggedFolder::read(d.path()).unwrap();
        let train = f.split("train");
        assert_eq!(train.len(), 1, "untagged b.jpg is skipped");
        assert_eq!(train[0].tags, vec!["dog", "beach"]);
        assert_eq!(train[0].image, d.path().join("images/a.jpg"));
        assert_eq!(f.split("dev")[0].tags, vec!["sky"]);
        assert_eq!(f.split_names(), vec!["dev", "train"]);
    }

    #[test]
    fn without_splits_everything_is_all() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "labels.tsv", "x.jpg\tcat\ny.jpg\tdog\n");
        let f = TaggedFolder::read(d.path()).unwrap();
        assert_eq!(f.split("all").len(), 2);
        assert_eq!(f.split_names(), vec!["all"]);
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "labels.tsv", "a.jpg\tcat\nno-tab-here\n");
        let err = TaggedFolder::read(d.path()).unwrap_err().to_string();
        assert!(err.contains("labels.tsv:2"), "{err}");

        write(d.path(), "labels.tsv", "a.jpg\tcat\n");
        write(d.path(), "splits.tsv", "a.jpg\ttrain\na.jpg\tvalidation\n");
        let err = TaggedFolder::read(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("splits.tsv:2") && err.contains("validation"),
            "{err}"
        );
    }

    #[test]
    fn carves_a_deterministic_dev_split_when_missing() {
        let d = tempfile::tempdir().unwrap();
        let mut labels = String::new();
        let mut splits = String::new();
        for i in 0..1000 {
            labels.push_str(&format!("img/{i}.jpg\ttag{}\n", i % 7));
            splits.push_str(&format!("img/{i}.jpg\ttrain\n"));
        }
        write(d.path(), "labels.tsv", &labels);
        write(d.path(), "splits.tsv", &splits);
        let a = TaggedFolder::read(d.path()).unwrap();
        let dev = a.split("dev").len();
        assert!((60..140).contains(&dev), "about 10% carved, got {dev}");
        let b = TaggedFolder::read(d.path()).unwrap();
        assert_eq!(a.split("dev"), b.split("dev"));
        assert_eq!(a.split("train").len() + dev, 1000);
    }
}
