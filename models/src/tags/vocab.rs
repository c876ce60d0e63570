//! The tag vocabulary of a hashtag decoder, with its special tokens.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub const PAD: u32 = 0;
pub const START: u32 = 1;
pub const END: u32 = 2;
const SPECIALS: [&str; 3] = ["<pad>", "<start>", "<end>"];

/// Tags in index order; indices 0..3 are `<pad>`, `<start>`, `<end>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Vocab {
    tokens: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

impl Vocab {
    /// Builds a vocabulary of the tags used at least `min_count` times, most frequent first
    /// (ties alphabetical), so indices are stable for the same data.
    pub fn build<'a>(
        tag_lists: impl IntoIterator<Item = &'a Vec<String>>,
        min_count: usize,
    ) -> Self {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for tags in tag_lists {
            for t in tags {
                *counts.entry(t.as_str()).or_default() += 1;
            }
        }
        let mut tags: Vec<(&str, usize)> = counts
            .into_iter()
            .filter(|&(_, c)| c >= min_count)
            .collect();
        tags.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        Self::from_tags(tags.into_iter().map(|(t, _)| t.to_string()))
    }

    /// A vocabulary of exactly these tags, in this order, after the special tokens.
    pub fn from_tags(tags: impl IntoIterator<Item = String>) -> Self {
        let tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).chain(tags).collect();
        let mut v = Self {
            tokens,
            index: HashMap::new(),
        };
        v.reindex();
        v
    }

    /// Rebuilds the lookup table after deserialisation.
    pub fn reindex(&mut self) {
        self.index = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.len() <= SPECIALS.len()
    }
    pub fn id(&self, tag: &str) -> Option<u32> {
        self.index
            .get(tag)
            .copied()
            .filter(|&i| i >= SPECIALS.len() as u32)
    }
    pub fn tag(&self, id: u32) -> &str {
        &self.tokens[id as usize]
    }
    /// The real tags (no special tokens), in index order.
    pub fn tags(&self) -> &[String] {
        &self.tokens[SPECIALS.len()..]
    }
    pub fn is_special(id: u32) -> bool {
        (id as usize) < SPECIALS.len()
    }

    /// Decoder input and target for one image: `[<start>, t1..tn]` → `[t1..tn, <end>]`, tags
    /// outside the vocabulary dropped, at most `max_tags` kept.
    pub fn encode_targets(&self, tags: &[String], max_tags: usize) -> (Vec<u32>, Vec<u32>) {
        let ids: Vec<u32> = tags
            .iter()
            .filter_map(|t| self.id(t))
            .take(max_tags)
            .collect();
        let mut input = vec![START];
        input.extend(&ids);
        let mut target = ids;
        target.push(END);
        (input, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_by_frequency_and_encodes_targets() {
        let lists = vec![
            vec!["dog".to_string(), "grass".to_string()],
            vec!["dog".to_string(), "ball".to_string()],
            vec!["rare".to_string()],
        ];
        let v = Vocab::build(&lists, 1);
        assert_eq!(v.tags(), &["dog", "ball", "grass", "rare"]);
        let v2 = Vocab::build(&lists, 2);
        assert_eq!(v2.tags(), &["dog"]);
        let (input, target) = v2.encode_targets(&lists[0], 10);
        assert_eq!(input, vec![START, 3]);
        assert_eq!(target, vec![3, END]);
        assert_eq!(v2.id("<end>"), None, "special tokens are not tags");
    }
}
