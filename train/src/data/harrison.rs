//! HARRISON layout reader (Park, Li, Kim 2016, arXiv:1605.05054).
//!
//! The benchmark ships three line-oriented files in one folder:
//! - `data_list.txt`: one image path per line, relative to the dataset root
//!   (`instagram_dataset/sea/image_50.jpg`);
//! - `tag_list.txt`: the hashtags of the image on the same line, space-separated, no `#`
//!   (lines may end with a space);
//! - `vocab_index.txt`: the 997 hashtags, one per line as `tag<spaces>index`.
//!
//! The hashtag co-occurrence model only needs the tag lists ([`read_harrison_tags`]); the
//! image models need the images too ([`read_harrison`]), which are often not on disk, so
//! missing images are reported as one clear error rather than 57,383 failed opens later.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::Sample;
use crate::{Error, Result};

/// File names of the HARRISON layout.
pub const DATA_LIST: &str = "data_list.txt";
pub const TAG_LIST: &str = "tag_list.txt";
pub const VOCAB_INDEX: &str = "vocab_index.txt";

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Lines of a file without the final empty line a trailing newline produces.
fn lines_of(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines
}

/// Normalises one hashtag the way every reader yields them: lowercase, no leading `#`.
fn normalise(tag: &str) -> String {
    tag.trim().trim_start_matches('#').to_lowercase()
}

/// Reads `vocab_index.txt`: the hashtags ordered by their index.
///
/// Each line is a tag and its index separated by whitespace; indices must cover `0..n`
/// exactly once, so a truncated or edited vocabulary is caught here.
pub fn read_harrison_vocab(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(VOCAB_INDEX);
    let text = read_text(&path)?;
    let lines = lines_of(&text);
    let mut slots: Vec<Option<String>> = vec![None; lines.len()];
    for (i, line) in lines.iter().enumerate() {
        let parse = |message: String| Error::Parse {
            path: path.clone(),
            line: i + 1,
            message,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [tag, index] = fields[..] else {
            return Err(parse(format!(
                "expected `tag index`, found {} fields",
                fields.len()
            )));
        };
        let index: usize = index
            .parse()
            .map_err(|_| parse(format!("index `{index}` is not a non-negative integer")))?;
        let slot = slots.get_mut(index).ok_or_else(|| {
            parse(format!(
                "index {index} out of range for {} entries",
                lines.len()
            ))
        })?;
        if slot.is_some() {
            return Err(parse(format!("index {index} appears twice")));
        }
        *slot = Some(normalise(tag));
    }
    // Every slot is filled: n lines, n distinct indices in 0..n.
    Ok(slots.into_iter().flatten().collect())
}

/// Reads the hashtags of every post in `tag_list.txt`, in file order.
///
/// Tags are lowercased, `#` is dropped and repeats within a post are kept once. When
/// `vocab_index.txt` is present every tag must be in it (an unknown tag is a parse error
/// naming the line); a post without any tag is an error too, as the list would be
/// misaligned with `data_list.txt`.
pub fn read_harrison_tags(dir: &Path) -> Result<Vec<Vec<String>>> {
    let vocab_path = dir.join(VOCAB_INDEX);
    let vocab: Option<HashSet<String>> = if vocab_path.exists() {
        Some(read_harrison_vocab(dir)?.into_iter().collect())
    } else {
        None
    };
    let path = dir.join(TAG_LIST);
    let text = read_text(&path)?;
    let mut posts = Vec::new();
    for (i, line) in lines_of(&text).into_iter().enumerate() {
        let mut tags: Vec<String> = Vec::new();
        for raw in line.split_whitespace() {
            let tag = normalise(raw);
            if tag.is_empty() {
                continue;
            }
            if let Some(v) = &vocab {
                if !v.contains(&tag) {
                    return Err(Error::Parse {
                        path: path.clone(),
                        line: i + 1,
                        message: format!("hashtag `{tag}` is not in {VOCAB_INDEX}"),
                    });
                }
            }
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        if tags.is_empty() {
            return Err(Error::Parse {
                path: path.clone(),
                line: i + 1,
                message: "post has no hashtags".into(),
            });
        }
        posts.push(tags);
    }
    Ok(posts)
}

/// Reads HARRISON as image/tag samples.
///
/// Image paths in `data_list.txt` are resolved against `image_root` (default: `dir`).
/// Missing images are an error that counts them and names `--skip-missing-images`; with
/// `skip_missing` they are dropped instead (an error still if none is left, since training
/// on nothing is never what was meant).
pub fn read_harrison(
    dir: &Path,
    image_root: Option<&Path>,
    skip_missing: bool,
) -> Result<Vec<Sample>> {
    let data_path = dir.join(DATA_LIST);
    let text = read_text(&data_path)?;
    let images = lines_of(&text);
    let tags = read_harrison_tags(dir)?;
    if images.len() != tags.len() {
        let (path, line) = if images.len() > tags.len() {
            (dir.join(TAG_LIST), tags.len() + 1)
        } else {
            (data_path.clone(), images.len() + 1)
        };
        return Err(Error::Parse {
            path,
            line,
            message: format!(
                "{DATA_LIST} has {} lines but {TAG_LIST} has {}; the lists must align line by line",
                images.len(),
                tags.len()
            ),
        });
    }
    let root = image_root.unwrap_or(dir);
    let mut samples = Vec::with_capacity(images.len());
    let mut missing: Vec<PathBuf> = Vec::new();
    for (i, (rel, tags)) in images.iter().zip(tags).enumerate() {
        let rel = rel.trim();
        if rel.is_empty() {
            return Err(Error::Parse {
                path: data_path.clone(),
                line: i + 1,
                message: "empty image path".into(),
            });
        }
        let image = root.join(rel);
        if image.is_file() {
            samples.push(Sample { image, tags });
        } else {
            missing.push(image);
        }
    }
    let total = images.len();
    if !missing.is_empty() && !skip_missing {
        return Err(Error::msg(format!(
            "{} of {} HARRISON images are missing under {} (first: {}); \
             pass --skip-missing-images to train/evaluate on the ones present",
            missing.len(),
            total,
            root.display(),
            missing[0].display()
        )));
    }
    if samples.is_empty() && total > 0 {
        return Err(Error::msg(format!(
            "none of the {total} HARRISON images is present under {}",
            root.display()
        )));
    }
    if !missing.is_empty() {
        tracing::warn!(
            missing = missing.len(),
            total,
            "skipping missing HARRISON images"
        );
    }
    Ok(samples)
}
