//! Instagram hashtag expansion by co-occurrence.
//!
//! The image model names what it sees (`#dog`, `#beach`); people on Instagram tag with the
//! hashtags that travel with those words (`#puppy #dogsofinstagram`). HARRISON's 57,383
//! real posts hold that knowledge as co-occurrence counts ([`CooccurrenceStats`]); the
//! [`Expander`] turns the content tags of an image into ranked suggestions.
//!
//! Score of a candidate hashtag `t` for content tags `c` with weights `w_c` (only content
//! tags present in the statistics count; `N` posts, `n(x)` posts with `x`, `n(c,t)` with
//! both):
//! ```text
//! P(t)      = n(t) / N
//! P~(t | c) = (n(c,t) + α·P(t)) / (n(c) + α)          (α = 10 by default)
//! score(t)  = Σ_c w_c · P~(t | c) / Σ_c w_c
//! ```
//! i.e. the content-weighted probability that a post with the content tags also carries `t`,
//! with each conditional shrunk towards `t`'s overall popularity so that a content tag seen in
//! only a handful of posts cannot push its accidental companions to the top. Candidates must
//! co-occur with at least one content tag; ties go to the more popular hashtag, then the name.
pub mod stats;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub use stats::{normalise_tag, CooccurrenceStats};

use crate::{Error, Result};

/// File name of the shipped statistics inside the hashtags asset folder.
pub const STATS_FILE: &str = "harrison-cooccurrence.tsv";
/// The statistics file `path` names: the file itself, or [`STATS_FILE`] in a folder.
pub fn stats_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(STATS_FILE)
    } else {
        path.to_path_buf()
    }
}

pub use hashtale_types::Suggestion;

/// Limits and filters applied to suggestions.
#[derive(Debug, Clone)]
pub struct SuggestOptions {
    /// Cap on the hashtags of the post: the distinct, non-blocked content tags passed in
    /// count towards it and suggestions fill the rest (Instagram allows 30; default 15).
    pub max_total: usize,
    /// Optional cap on the number of suggestions alone (evaluation asks for exactly 5).
    pub max_suggestions: Option<usize>,
    /// Hashtags never suggested (normalised: lowercase, no `#`).
    pub blocklist: HashSet<String>,
    /// When set, only these hashtags are suggested (a brand's own set).
    pub allowlist: Option<HashSet<String>>,
}

impl Default for SuggestOptions {
    fn default() -> Self {
        Self {
            max_total: 15,
            max_suggestions: None,
            blocklist: HashSet::new(),
            allowlist: None,
        }
    }
}

impl SuggestOptions {
    /// Whether a content tag may appear on the post (only the blocklist applies to content).
    pub fn allows_content(&self, tag: &str) -> bool {
        !self.blocklist.contains(&normalise_tag(tag))
    }

    /// Whether `tag` may be suggested: not blocked and, with an allowlist, listed in it.
    pub fn allows_suggestion(&self, tag: &str) -> bool {
        let tag = normalise_tag(tag);
        !self.blocklist.contains(&tag) && self.allowlist.as_ref().is_none_or(|a| a.contains(&tag))
    }
}

/// Reads a blocklist/allowlist file: hashtags separated by whitespace or newlines, each with
/// or without `#`; a lone `#` starts a comment that runs to the end of the line, so
/// `# banned words` and `spam  # too generic` both read as expected. A hashtag may hold only
/// letters, digits and `_` (Instagram's own rule); anything else is an error naming the line.
pub fn read_tag_set(path: &Path) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut set = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        for token in line.split_whitespace() {
            if token == "#" {
                break;
            }
            let tag = normalise_tag(token);
            if tag.is_empty() || !tag.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: format!(
                        "`{token}` is not a hashtag (letters, digits and _ only; start comments with `# `)"
                    ),
                });
            }
            set.insert(tag);
        }
    }
    Ok(set)
}

/// Suggests Instagram hashtags from content tags using co-occurrence statistics.
#[derive(Debug, Clone)]
pub struct Expander {
    stats: CooccurrenceStats,
    alpha: f64,
}

impl Expander {
    /// Default smoothing strength α, in pseudo-posts (see the module docs).
    pub const DEFAULT_ALPHA: f64 = 10.0;

    pub fn new(stats: CooccurrenceStats) -> Self {
        Self {
            stats,
            alpha: Self::DEFAULT_ALPHA,
        }
    }

    /// Sets the smoothing strength α (0 gives the raw conditional probability).
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha.max(0.0);
        self
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    pub fn stats(&self) -> &CooccurrenceStats {
        &self.stats
    }

    /// Loads statistics from a file, or from [`STATS_FILE`] inside a folder.
    pub fn load(path: &Path) -> Result<Self> {
        let file = stats_file(path);
        if !file.exists() {
            return Err(Error::msg(format!(
                "hashtag statistics not found at {}; build them with \
                 `hashtale hashtags build --harrison DIR`",
                file.display()
            )));
        }
        Ok(Self::new(CooccurrenceStats::read(&file)?))
    }

    /// Smoothed P~(t | c) for tag ids (see the module docs).
    fn conditional(&self, c: u32, t: u32, pair: u64) -> f64 {
        let n = self.stats.posts().max(1) as f64;
        let prior = self.stats.tag_count_by_id(t) as f64 / n;
        (pair as f64 + self.alpha * prior) / (self.stats.tag_count_by_id(c) as f64 + self.alpha)
    }

    /// Content tags as (id, weight): normalised, known, positive finite weight, the largest
    /// weight kept for repeats.
    fn known_content(&self, content: &[(String, f32)]) -> Vec<(u32, f64)> {
        let mut weights: Vec<(u32, f64)> = Vec::new();
        for (tag, w) in content {
            let w = f64::from(*w);
            if !(w.is_finite() && w > 0.0) {
                continue;
            }
            let Some(id) = self.stats.tag_id(&normalise_tag(tag)) else {
                continue;
            };
            if self.stats.tag_count_by_id(id) == 0 {
                continue;
            }
            match weights.iter_mut().find(|(i, _)| *i == id) {
                Some(entry) => entry.1 = entry.1.max(w),
                None => weights.push((id, w)),
            }
        }
        weights
    }

    /// Ranked suggestions for content tags with scores (e.g. the image model's
    /// probabilities). Content tags outside the statistics' vocabulary contribute nothing;
    /// the content tags themselves are never suggested.
    pub fn suggest(&self, content: &[(String, f32)], opts: &SuggestOptions) -> Vec<Suggestion> {
        let shown: HashSet<String> = content
            .iter()
            .map(|(t, _)| normalise_tag(t))
            .filter(|t| !t.is_empty())
            .collect();
        let shown_count = shown.iter().filter(|t| opts.allows_content(t)).count();
        let mut room = opts.max_total.saturating_sub(shown_count);
        if let Some(m) = opts.max_suggestions {
            room = room.min(m);
        }
        let known = self.known_content(content);
        if room == 0 || known.is_empty() {
            return Vec::new();
        }
        let total_w: f64 = known.iter().map(|(_, w)| w).sum();

        // Candidates: every tag seen with at least one content tag.
        let candidates: HashSet<u32> = known
            .iter()
            .flat_map(|&(c, _)| self.stats.neighbours(c).map(|(t, _)| t))
            .collect();
        let mut scored: Vec<(u32, f64)> = candidates
            .into_iter()
            .filter(|&t| {
                let name = self.stats.tag_name(t);
                !shown.contains(name) && opts.allows_suggestion(name)
            })
            .map(|t| {
                let score: f64 = known
                    .iter()
                    .map(|&(c, w)| w * self.conditional(c, t, self.stats.pair_count_by_id(c, t)))
                    .sum();
                (t, score / total_w)
            })
            .collect();
        scored.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| {
                    self.stats
                        .tag_count_by_id(b.0)
                        .cmp(&self.stats.tag_count_by_id(a.0))
                })
                .then_with(|| self.stats.tag_name(a.0).cmp(self.stats.tag_name(b.0)))
        });
        scored.truncate(room);
        scored
            .into_iter()
            .map(|(t, score)| {
                // The content tags seen with t, by their contribution to its score.
                let mut because: Vec<(u32, f64)> = known
                    .iter()
                    .filter_map(|&(c, w)| {
                        let pair = self.stats.pair_count_by_id(c, t);
                        (pair > 0).then(|| (c, w * self.conditional(c, t, pair)))
                    })
                    .collect();
                because.sort_by(|a, b| b.1.total_cmp(&a.1));
                Suggestion {
                    tag: self.stats.tag_name(t).to_string(),
                    score: score as f32,
                    because: because
                        .into_iter()
                        .map(|(c, _)| self.stats.tag_name(c).to_string())
                        .collect(),
                }
            })
            .collect()
    }
}
