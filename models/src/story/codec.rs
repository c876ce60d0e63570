//! How a story model spells text: the character alphabet (with its fallback for unknown
//! characters), subword pieces, the document separator, and how a checkpoint reads hashtags.
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::subword::SubwordVocab;

/// The paragraph separator between documents in every stream (and what ends a story).
pub const DOC_SEP: &str = "\n\n";

/// Characters the alphabet always holds, so the fallback and the document format never miss.
const REQUIRED: [char; 3] = ['\n', ' ', '#'];

/// The character every unknown character becomes when its lower-case form is unknown too.
pub const FALLBACK: char = ' ';

/// The model's characters. Index order is the order of `chars`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alphabet {
    chars: Vec<char>,
    index: HashMap<char, u32>,
}

impl Alphabet {
    /// The alphabet of these characters (deduplicated, order kept), plus the required ones.
    pub fn new(chars: impl IntoIterator<Item = char>) -> Self {
        let mut v: Vec<char> = Vec::new();
        for c in chars.into_iter().chain(REQUIRED) {
            if !v.contains(&c) {
                v.push(c);
            }
        }
        let index = v.iter().enumerate().map(|(i, &c)| (c, i as u32)).collect();
        Alphabet { chars: v, index }
    }

    /// Characters seen at least `min_count` times in the texts, sorted by code point. Rarer ones
    /// are left to the fallback: a character seen once cannot be learned anyway.
    pub fn from_texts<'a>(texts: impl IntoIterator<Item = &'a str>, min_count: usize) -> Self {
        let mut counts: BTreeMap<char, usize> = BTreeMap::new();
        for t in texts {
            for c in t.chars() {
                *counts.entry(c).or_default() += 1;
            }
        }
        let mut chars: Vec<char> = counts
            .into_iter()
            .filter(|&(_, n)| n >= min_count.max(1))
            .map(|(c, _)| c)
            .collect();
        chars.extend(REQUIRED);
        chars.sort_unstable();
        chars.dedup();
        Self::new(chars)
    }

    pub fn len(&self) -> usize {
        self.chars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    pub fn contains(&self, c: char) -> bool {
        self.index.contains_key(&c)
    }

    /// The index of `c`; an unknown character maps to its lower-case form when that is known,
    /// else to [`FALLBACK`] (a space). Never fails.
    pub fn encode_char(&self, c: char) -> u32 {
        if let Some(&i) = self.index.get(&c) {
            return i;
        }
        let mut lower = c.to_lowercase();
        if let (Some(l), None) = (lower.next(), lower.next()) {
            if let Some(&i) = self.index.get(&l) {
                return i;
            }
        }
        self.index[&FALLBACK]
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        text.chars().map(|c| self.encode_char(c)).collect()
    }

    /// The character at `i` (the fallback for an out-of-range index).
    pub fn decode_one(&self, i: u32) -> char {
        self.chars.get(i as usize).copied().unwrap_or(FALLBACK)
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter().map(|&i| self.decode_one(i)).collect()
    }

    /// The alphabet as one string, how checkpoints store it.
    pub fn to_string_repr(&self) -> String {
        self.chars.iter().collect()
    }
}

/// How a story LM spells text: one id per character ([`Alphabet`]) or per subword piece
/// ([`SubwordVocab`]).
#[derive(Debug, Clone)]
pub enum Codec {
    Chars(Alphabet),
    /// Boxed: a tokenizer is large beside an alphabet.
    Subword(Box<SubwordVocab>),
}

impl Codec {
    /// Number of ids (the model's input and output size).
    pub fn len(&self) -> usize {
        match self {
            Codec::Chars(a) => a.len(),
            Codec::Subword(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            Codec::Chars(a) => a.encode(text),
            Codec::Subword(v) => v.encode(text),
        }
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Codec::Chars(a) => a.decode(ids),
            Codec::Subword(v) => v.decode(ids),
        }
    }

    /// The text of one id on its own.
    pub fn piece(&self, id: u32) -> std::borrow::Cow<'_, str> {
        match self {
            Codec::Chars(a) => a.decode_one(id).to_string().into(),
            Codec::Subword(v) => v.piece(id).into(),
        }
    }

    /// Ids a story may not contain: any with a newline or a `#` (a story is one paragraph and
    /// carries no further hashtags).
    pub fn story_banned(&self) -> Vec<u32> {
        match self {
            Codec::Chars(a) => ['\n', '#']
                .iter()
                .filter(|&&c| a.contains(c))
                .map(|&c| a.encode_char(c))
                .collect(),
            Codec::Subword(v) => v.ids_containing(&['\n', '#']),
        }
    }

    /// `chars` or `subword`, as reports name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Codec::Chars(_) => "chars",
            Codec::Subword(_) => "subword",
        }
    }
}

impl From<Alphabet> for Codec {
    fn from(a: Alphabet) -> Self {
        Codec::Chars(a)
    }
}

/// How training stories are prefixed: the seed's pseudo-hashtag, or the hashtag-conditioned
/// format of [`super::keywords`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Conditioning {
    /// `#word story`: one of the story's words, with probability `tag_prob` (the plain model).
    #[default]
    PseudoTag,
    /// `#k1 #k2\n` + story: a random non-empty subset of the story's keywords, in random order.
    Keywords,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_fallback_never_panics() {
        let a = Alphabet::from_texts(["abc abc"], 1);
        assert_eq!(a.decode(&a.encode("cab")), "cab");
        // Upper case falls back to lower case, anything else to a space.
        assert_eq!(a.decode(&a.encode("CAB☃")), "cab ");
        assert_eq!(a.decode_one(10_000), FALLBACK);
    }
}
