//! Hashtag co-occurrence counts and their compact text file.
//!
//! The counts are all the expansion needs: how many posts there are, how many carry each
//! hashtag and how many carry each pair. They are derived data (no post, image or user is
//! recoverable from them), which is what lets the product ship them.
//!
//! File format (`hashtale-cooccurrence v1`, UTF-8, tab-separated, `#` lines are comments):
//! ```text
//! hashtale-cooccurrence v1
//! posts<TAB>57383
//! love<TAB>5892
//! friend<TAB>3646<TAB>0:523
//! beach<TAB>3025<TAB>0:310 1:201
//! ```
//! After the `posts` line, the k-th tag line (k = 0, 1, …) is tag k: its name, the number of
//! posts carrying it and, optionally, `j:c` entries meaning "tags k and j share c posts" for
//! earlier tags j < k only (each pair is stored once). Tags are written by decreasing count,
//! so the popular ones get the short indices.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use crate::{Error, Result};

/// First line of a statistics file; bump the version when the layout changes.
pub const MAGIC: &str = "hashtale-cooccurrence v1";

/// Normalises a hashtag: trimmed, lowercase, no leading `#`.
pub fn normalise_tag(tag: &str) -> String {
    tag.trim().trim_start_matches('#').trim().to_lowercase()
}

/// Post, tag and tag-pair counts over a collection of posts.
#[derive(Debug, Clone, Default)]
pub struct CooccurrenceStats {
    posts: u64,
    tags: Vec<String>,
    counts: Vec<u64>,
    index: HashMap<String, u32>,
    /// Symmetric: `pairs[a][b] == pairs[b][a]`, no self pairs.
    pairs: Vec<HashMap<u32, u64>>,
}

impl CooccurrenceStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a collection of posts (each a list of hashtags).
    pub fn from_posts<P, S>(posts: impl IntoIterator<Item = P>) -> Self
    where
        P: AsRef<[S]>,
        S: AsRef<str>,
    {
        let mut stats = Self::new();
        for post in posts {
            stats.add_post(post.as_ref());
        }
        stats
    }

    fn intern(&mut self, tag: &str) -> u32 {
        if let Some(&i) = self.index.get(tag) {
            return i;
        }
        let i = self.tags.len() as u32;
        self.tags.push(tag.to_string());
        self.counts.push(0);
        self.pairs.push(HashMap::new());
        self.index.insert(tag.to_string(), i);
        i
    }

    /// Adds one post: its hashtags are normalised and counted once each, so a team's own
    /// posts can be folded into the HARRISON counts the same way. Empty tags are ignored; a
    /// post with no tag left still counts as a post (it lowers every probability a little,
    /// as an untagged post should).
    pub fn add_post<S: AsRef<str>>(&mut self, tags: &[S]) {
        let mut ids: Vec<u32> = tags
            .iter()
            .map(|t| normalise_tag(t.as_ref()))
            .filter(|t| !t.is_empty() && !t.contains(char::is_whitespace) && !t.contains(':'))
            .map(|t| self.intern(&t))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        self.posts += 1;
        for (k, &a) in ids.iter().enumerate() {
            self.counts[a as usize] += 1;
            for &b in &ids[k + 1..] {
                *self.pairs[a as usize].entry(b).or_insert(0) += 1;
                *self.pairs[b as usize].entry(a).or_insert(0) += 1;
            }
        }
    }

    /// Number of posts counted.
    pub fn posts(&self) -> u64 {
        self.posts
    }

    /// Number of distinct hashtags.
    pub fn num_tags(&self) -> usize {
        self.tags.len()
    }

    /// Number of distinct hashtag pairs seen together at least once.
    pub fn num_pairs(&self) -> usize {
        self.pairs.iter().map(HashMap::len).sum::<usize>() / 2
    }

    pub fn tag_id(&self, tag: &str) -> Option<u32> {
        self.index.get(tag).copied()
    }

    pub fn tag_name(&self, id: u32) -> &str {
        &self.tags[id as usize]
    }

    pub fn tag_count_by_id(&self, id: u32) -> u64 {
        self.counts[id as usize]
    }

    /// Posts carrying both tags `a` and `b`, by id.
    pub fn pair_count_by_id(&self, a: u32, b: u32) -> u64 {
        self.pairs[a as usize].get(&b).copied().unwrap_or(0)
    }

    /// Posts carrying `tag` (0 when unknown).
    pub fn tag_count(&self, tag: &str) -> u64 {
        self.tag_id(&normalise_tag(tag))
            .map_or(0, |i| self.counts[i as usize])
    }

    /// Posts carrying both `a` and `b` (0 when either is unknown or they are the same tag).
    pub fn pair_count(&self, a: &str, b: &str) -> u64 {
        match (
            self.tag_id(&normalise_tag(a)),
            self.tag_id(&normalise_tag(b)),
        ) {
            (Some(a), Some(b)) => self.pairs[a as usize].get(&b).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// The tags seen with tag `id`, with their shared post counts (unordered).
    pub fn neighbours(&self, id: u32) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.pairs[id as usize].iter().map(|(&j, &c)| (j, c))
    }

    /// Forgets pairs seen together in fewer than `min_pair_count` posts, as the shipped file
    /// does, so evaluation can measure exactly what ships. Tag and post counts stay exact.
    pub fn prune(&mut self, min_pair_count: u64) {
        for row in &mut self.pairs {
            row.retain(|_, c| *c >= min_pair_count);
        }
    }

    /// Tag ids by decreasing count, ties by name: the file order and the popularity ranking.
    pub fn ids_by_popularity(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..self.tags.len() as u32).collect();
        ids.sort_by(|&a, &b| {
            self.counts[b as usize]
                .cmp(&self.counts[a as usize])
                .then_with(|| self.tags[a as usize].cmp(&self.tags[b as usize]))
        });
        ids
    }

    /// The `n` most common hashtags with their counts.
    pub fn most_common(&self, n: usize) -> Vec<(String, u64)> {
        self.ids_by_popularity()
            .into_iter()
            .take(n)
            .map(|i| (self.tags[i as usize].clone(), self.counts[i as usize]))
            .collect()
    }

    /// Writes the file format described in the module docs. Pairs seen in fewer than
    /// `min_pair_count` posts are left out (1 keeps everything); tag and post counts are
    /// always exact.
    pub fn write_to<W: Write>(&self, out: W, min_pair_count: u64, comment: &str) -> Result<()> {
        let io = |e: std::io::Error| Error::msg(format!("writing co-occurrence stats: {e}"));
        let mut w = BufWriter::new(out);
        writeln!(w, "{MAGIC}").map_err(io)?;
        for line in comment.lines() {
            writeln!(w, "# {line}").map_err(io)?;
        }
        writeln!(w, "posts\t{}", self.posts).map_err(io)?;
        let order = self.ids_by_popularity();
        let mut rank = vec![0u32; order.len()];
        for (k, &id) in order.iter().enumerate() {
            rank[id as usize] = k as u32;
        }
        for (k, &id) in order.iter().enumerate() {
            write!(
                w,
                "{}\t{}",
                self.tags[id as usize], self.counts[id as usize]
            )
            .map_err(io)?;
            let mut earlier: Vec<(u32, u64)> = self.pairs[id as usize]
                .iter()
                .map(|(&j, &c)| (rank[j as usize], c))
                .filter(|&(j, c)| (j as usize) < k && c >= min_pair_count.max(1))
                .collect();
            earlier.sort_unstable();
            for (n, (j, c)) in earlier.iter().enumerate() {
                let sep = if n == 0 { '\t' } else { ' ' };
                write!(w, "{sep}{j}:{c}").map_err(io)?;
            }
            writeln!(w).map_err(io)?;
        }
        w.flush().map_err(io)
    }

    /// Writes the statistics to `path` (see [`Self::write_to`]).
    pub fn write(&self, path: &Path, min_pair_count: u64, comment: &str) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        self.write_to(file, min_pair_count, comment)
    }

    /// Reads a statistics file; `path` only names the source in errors.
    pub fn read_from<R: BufRead>(input: R, path: &Path) -> Result<Self> {
        let parse = |line: usize, message: String| Error::Parse {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut stats = Self::new();
        let mut saw_magic = false;
        let mut saw_posts = false;
        for (i, line) in input.lines().enumerate() {
            let n = i + 1;
            let line = line.map_err(|e| Error::io(path, e))?;
            if !saw_magic {
                if line.trim() != MAGIC {
                    return Err(parse(n, format!("expected `{MAGIC}` header")));
                }
                saw_magic = true;
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split('\t');
            let name = fields.next().unwrap_or_default();
            let count: u64 = fields
                .next()
                .and_then(|c| c.trim().parse().ok())
                .ok_or_else(|| parse(n, "expected `name<TAB>count`".into()))?;
            if !saw_posts {
                if name != "posts" {
                    return Err(parse(n, "expected the `posts` line first".into()));
                }
                stats.posts = count;
                saw_posts = true;
                continue;
            }
            let tag = normalise_tag(name);
            if tag.is_empty() || stats.index.contains_key(&tag) {
                return Err(parse(n, format!("empty or repeated tag `{name}`")));
            }
            if count > stats.posts {
                return Err(parse(
                    n,
                    format!("count {count} exceeds {} posts", stats.posts),
                ));
            }
            let id = stats.intern(&tag);
            stats.counts[id as usize] = count;
            for entry in fields.next().unwrap_or_default().split_whitespace() {
                let (j, c) = entry
                    .split_once(':')
                    .and_then(|(j, c)| Some((j.parse::<u32>().ok()?, c.parse::<u64>().ok()?)))
                    .ok_or_else(|| parse(n, format!("bad pair entry `{entry}`")))?;
                if j >= id {
                    return Err(parse(
                        n,
                        format!("pair index {j} must refer to an earlier tag"),
                    ));
                }
                if c > count.min(stats.counts[j as usize]) {
                    return Err(parse(n, format!("pair count {c} exceeds a tag count")));
                }
                stats.pairs[id as usize].insert(j, c);
                stats.pairs[j as usize].insert(id, c);
            }
            if fields.next().is_some() {
                return Err(parse(n, "too many fields".into()));
            }
        }
        if !saw_posts {
            return Err(parse(0, "no `posts` line: empty or truncated file".into()));
        }
        Ok(stats)
    }

    /// Reads a statistics file written by [`Self::write`].
    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        Self::read_from(BufReader::new(file), path)
    }
}

/// Equal when the counts are equal, whatever order the tags were first seen in.
impl PartialEq for CooccurrenceStats {
    fn eq(&self, other: &Self) -> bool {
        self.posts == other.posts
            && self.tags.len() == other.tags.len()
            && self.tags.iter().enumerate().all(|(a, name)| {
                let Some(oa) = other.tag_id(name) else {
                    return false;
                };
                self.counts[a] == other.counts[oa as usize]
                    && self.pairs[a].len() == other.pairs[oa as usize].len()
                    && self.pairs[a].iter().all(|(&b, &c)| {
                        other
                            .tag_id(&self.tags[b as usize])
                            .and_then(|ob| other.pairs[oa as usize].get(&ob))
                            == Some(&c)
                    })
            })
    }
}
