//! Story corpora: plain UTF-8 text, one story per paragraph, stories separated by blank lines.
//!
//! Also the character alphabet (with its fallback for unknown characters), the dev split (held out
//! by story, so no story leaks between train and dev), and the character streams the model is
//! trained and evaluated on.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::keywords::{format_prefix, KeywordExtractor};
use super::subword::SubwordVocab;
use crate::{Error, Result};

/// The paragraph separator between documents in every stream (and what ends a story).
pub const DOC_SEP: &str = "\n\n";

/// Characters the alphabet always holds, so the fallback and the document format never miss.
const REQUIRED: [char; 3] = ['\n', ' ', '#'];

/// The character every unknown character becomes when its lower-case form is unknown too.
pub const FALLBACK: char = ' ';

/// Splits a text into stories: CRLF and lone CR become LF, stories are separated by one or more
/// blank (or whitespace-only) lines, the lines of one story are joined with single spaces, and
/// empty stories are dropped.
pub fn parse_stories(text: &str) -> Vec<String> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut stories = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        let line = line.trim();
        if line.is_empty() {
            if !cur.is_empty() {
                stories.push(cur.join(" "));
                cur.clear();
            }
        } else {
            cur.push(line);
        }
    }
    if !cur.is_empty() {
        stories.push(cur.join(" "));
    }
    // A BOM at the very start is not part of the first story.
    if let Some(first) = stories.first_mut() {
        if let Some(rest) = first.strip_prefix('\u{feff}') {
            *first = rest.trim_start().to_string();
        }
    }
    stories.retain(|s| !s.is_empty());
    stories
}

/// Reads and splits a story file (see [`parse_stories`]).
pub fn read_stories(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(parse_stories(&text))
}

/// Splits stories into (train, dev): a seeded shuffle, then the first `dev_frac` of them (at least
/// one when there are two or more stories) are held out. Whole stories, never positions.
pub fn split_dev(stories: &[String], dev_frac: f64, seed: u64) -> (Vec<String>, Vec<String>) {
    let mut idx: Vec<usize> = (0..stories.len()).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut n_dev = (stories.len() as f64 * dev_frac).round() as usize;
    if dev_frac > 0.0 && n_dev == 0 && stories.len() >= 2 {
        n_dev = 1;
    }
    n_dev = n_dev.min(stories.len());
    let mut dev_idx = idx[..n_dev].to_vec();
    let mut train_idx = idx[n_dev..].to_vec();
    // Keep the file's order inside each split, which makes the splits easy to inspect.
    dev_idx.sort_unstable();
    train_idx.sort_unstable();
    (
        train_idx.iter().map(|&i| stories[i].clone()).collect(),
        dev_idx.iter().map(|&i| stories[i].clone()).collect(),
    )
}

/// One input corpus with its sampling weight, parsed from `PATH` or `PATH:WEIGHT`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CorpusSpec {
    pub path: PathBuf,
    pub weight: f64,
}

impl std::str::FromStr for CorpusSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some((p, w)) = s.rsplit_once(':') {
            if let Ok(weight) = w.parse::<f64>() {
                if !(weight >= 0.0 && weight.is_finite()) {
                    return Err(Error::msg(format!("corpus weight must be >= 0: {s}")));
                }
                return Ok(CorpusSpec {
                    path: p.into(),
                    weight,
                });
            }
        }
        Ok(CorpusSpec {
            path: s.into(),
            weight: 1.0,
        })
    }
}

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

/// Words that make a poor pseudo-hashtag for a story.
const STOP: &[&str] = &[
    "about",
    "after",
    "again",
    "also",
    "always",
    "another",
    "around",
    "back",
    "because",
    "been",
    "before",
    "being",
    "could",
    "decided",
    "didn't",
    "does",
    "doesn't",
    "down",
    "even",
    "ever",
    "every",
    "from",
    "going",
    "have",
    "having",
    "here",
    "into",
    "just",
    "know",
    "like",
    "made",
    "make",
    "many",
    "more",
    "much",
    "must",
    "never",
    "next",
    "only",
    "other",
    "over",
    "really",
    "said",
    "same",
    "should",
    "since",
    "some",
    "something",
    "still",
    "such",
    "than",
    "that",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "this",
    "those",
    "through",
    "time",
    "today",
    "very",
    "wanted",
    "was",
    "went",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "will",
    "with",
    "would",
    "your",
    "yesterday",
    "finally",
    "later",
    "felt",
    "got",
    "get",
    "took",
    "came",
    "come",
    "told",
    "asked",
    "started",
    "tried",
    "until",
    "think",
    "thought",
    "want",
    "first",
    "last",
    "week",
    "year",
    "years",
    "night",
    "morning",
    "day",
    "days",
    "better",
    "little",
    "great",
    "good",
    "sure",
    "need",
    "needed",
    "away",
    "took",
];

/// A pseudo-hashtag for a story: one of its content words (letters only, 4+ letters, not a stop
/// word), picked at random. Stories carry no hashtags, so this is what teaches the model that the
/// hashtag in front of a story says what the story is about.
pub fn pseudo_tag(story: &str, rng: &mut impl Rng) -> Option<String> {
    let words: Vec<String> = story
        .split(|c: char| !c.is_alphabetic() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| {
            w.chars().count() >= 4
                && w.chars().all(|c| c.is_ascii_lowercase())
                && !STOP.contains(&w.as_str())
        })
        .collect();
    if words.is_empty() {
        None
    } else {
        Some(words[rng.gen_range(0..words.len())].clone())
    }
}

/// One document of a training stream: `#tag ` (with probability `tag_prob`), the story, the
/// separator.
pub fn document(story: &str, tag_prob: f64, rng: &mut impl Rng) -> String {
    let mut d = String::with_capacity(story.len() + 16);
    if tag_prob > 0.0 && rng.gen::<f64>() < tag_prob {
        if let Some(t) = pseudo_tag(story, rng) {
            d.push('#');
            d.push_str(&t);
            d.push(' ');
        }
    }
    d.push_str(story);
    d.push_str(DOC_SEP);
    d
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

/// Makes the documents of a training stream.
pub enum Prefixer<'a> {
    /// See [`Conditioning::PseudoTag`]; the probability of a tag.
    PseudoTag(f64),
    /// See [`Conditioning::Keywords`]; `drop_prob` is the chance of no prefix at all, so the model
    /// also writes stories for images without hashtags.
    Keywords {
        extractor: &'a KeywordExtractor,
        drop_prob: f64,
    },
}

impl Prefixer<'_> {
    pub fn document(&self, story: &str, rng: &mut impl Rng) -> String {
        self.document_with_keywords(story, rng).0
    }

    /// The document and the keyword ids its prefix holds (empty without a prefix).
    pub fn document_with_keywords(&self, story: &str, rng: &mut impl Rng) -> (String, Vec<u32>) {
        match self {
            Prefixer::PseudoTag(p) => (document(story, *p, rng), Vec::new()),
            Prefixer::Keywords {
                extractor,
                drop_prob,
            } => {
                let mut kw = extractor.extract(story);
                let mut d = String::with_capacity(story.len() + 48);
                let mut ids = Vec::new();
                if !kw.is_empty() && rng.gen::<f64>() >= *drop_prob {
                    // Images bring 1-5 hashtags in no fixed relation to the story's ranking.
                    kw.shuffle(rng);
                    let k = rng.gen_range(1..=kw.len());
                    d.push_str(&format_prefix(&kw[..k]));
                    ids = extractor.ids(&kw[..k]);
                }
                d.push_str(story);
                d.push_str(DOC_SEP);
                (d, ids)
            }
        }
    }
}

/// A training stream: characters and, per character, the document whose keyword set the model
/// reads there. A document owns the separator before it, so the model reads the hashtags of the
/// story it is about to start, as in generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stream {
    pub ids: Vec<u32>,
    pub doc: Vec<u32>,
    /// Keyword ids of each document.
    pub keywords: Vec<Vec<u32>>,
}

/// One epoch's stream: every story of every corpus `weight` times (the fractional part by
/// chance), as documents in shuffled order, after a leading separator.
pub fn epoch_stream(
    corpora: &[(Vec<String>, f64)],
    alphabet: &Codec,
    prefixer: &Prefixer,
    rng: &mut StdRng,
) -> Stream {
    let mut picks: Vec<&str> = Vec::new();
    for (stories, weight) in corpora {
        let whole = weight.floor() as usize;
        let frac = weight - weight.floor();
        for s in stories {
            let mut n = whole;
            if frac > 0.0 && rng.gen::<f64>() < frac {
                n += 1;
            }
            for _ in 0..n {
                picks.push(s);
            }
        }
    }
    picks.shuffle(rng);
    let sep = alphabet.encode(DOC_SEP);
    let mut out = Stream {
        ids: sep.clone(),
        doc: vec![0; sep.len()],
        keywords: Vec::with_capacity(picks.len()),
    };
    let last = picks.len().saturating_sub(1) as u32;
    for (i, s) in picks.into_iter().enumerate() {
        let (text, kw) = prefixer.document_with_keywords(s, rng);
        let enc = alphabet.encode(&text);
        let body = enc.len() - sep.len();
        let i = i as u32;
        out.doc.extend(std::iter::repeat_n(i, body));
        out.doc
            .extend(std::iter::repeat_n((i + 1).min(last), sep.len()));
        out.ids.extend(enc);
        out.keywords.push(kw);
    }
    out
}

/// One evaluation lane: characters and, per character, whether predicting it counts and which
/// document (index into the documents given) it belongs to, as in [`Stream`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvalLane {
    pub ids: Vec<u32>,
    pub scored: Vec<bool>,
    pub doc: Vec<u32>,
    /// Characters of the scored text (its stories and their closing separators): what bits per
    /// character divide by, whatever the ids spell.
    pub chars: usize,
}

/// Deals documents `(context, story)` into at most `max_lanes` evaluation lanes of similar length
/// (longest first, each to the shortest lane). A lane is a separator, then per document its
/// context (read, not scored: e.g. a hashtag prefix) and its story with the closing separator
/// (scored). Lanes let evaluation batch across stories while every story still starts from the
/// state a document start gives.
pub fn eval_lanes(
    docs: &[(String, String)],
    alphabet: &Codec,
    max_lanes: usize,
    min_lane_chars: usize,
) -> Vec<EvalLane> {
    let len = |d: &(String, String)| d.0.chars().count() + d.1.chars().count() + 2;
    let total: usize = docs.iter().map(len).sum();
    let n = (total / min_lane_chars.max(1))
        .clamp(1, max_lanes.max(1))
        .min(docs.len().max(1));
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(len(&docs[i])));
    let mut lanes: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); n];
    for i in order {
        let lane = lanes
            .iter_mut()
            .min_by_key(|(l, _)| *l)
            .expect("at least one lane");
        lane.0 += len(&docs[i]);
        lane.1.push(i);
    }
    lanes
        .into_iter()
        .map(|(_, mut ids)| {
            ids.sort_unstable();
            let sep = alphabet.encode(DOC_SEP);
            let mut lane = EvalLane {
                ids: sep.clone(),
                scored: vec![false; sep.len()],
                doc: vec![ids.first().copied().unwrap_or(0) as u32; sep.len()],
                chars: 0,
            };
            for (k, &i) in ids.iter().enumerate() {
                let (ctx, story) = &docs[i];
                let c = alphabet.encode(ctx);
                let scored_text = format!("{story}{DOC_SEP}");
                let s = alphabet.encode(&scored_text);
                lane.chars += scored_text.chars().count();
                lane.scored.extend(std::iter::repeat_n(false, c.len()));
                lane.scored.extend(std::iter::repeat_n(true, s.len()));
                // The closing separator already belongs to the next document of the lane.
                let next = ids.get(k + 1).copied().unwrap_or(i) as u32;
                let body = c.len() + s.len() - sep.len();
                lane.doc.extend(std::iter::repeat_n(i as u32, body));
                lane.doc.extend(std::iter::repeat_n(next, sep.len()));
                lane.ids.extend(c);
                lane.ids.extend(s);
            }
            lane
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::keywords::split_prefix;
    use super::*;

    #[test]
    fn corpus_spec_parses_weights() {
        let c: CorpusSpec = "a/b.txt:3".parse().unwrap();
        assert_eq!(c.path, PathBuf::from("a/b.txt"));
        assert_eq!(c.weight, 3.0);
        let c: CorpusSpec = "a/b.txt".parse().unwrap();
        assert_eq!(c.weight, 1.0);
        assert!("x:-1".parse::<CorpusSpec>().is_err());
    }

    #[test]
    fn alphabet_fallback_never_panics() {
        let a = Alphabet::from_texts(["abc abc"], 1);
        assert_eq!(a.decode(&a.encode("cab")), "cab");
        // Upper case falls back to lower case, anything else to a space.
        assert_eq!(a.decode(&a.encode("CAB☃")), "cab ");
        assert_eq!(a.decode_one(10_000), FALLBACK);
    }

    #[test]
    fn split_is_by_story_and_deterministic() {
        let stories: Vec<String> = (0..20).map(|i| format!("story {i}.")).collect();
        let (tr, dev) = split_dev(&stories, 0.1, 7);
        assert_eq!(dev.len(), 2);
        assert_eq!(tr.len(), 18);
        assert!(dev.iter().all(|d| !tr.contains(d)));
        assert_eq!(split_dev(&stories, 0.1, 7).1, dev);
    }

    #[test]
    fn lanes_hold_every_story_once() {
        let a = Codec::from(Alphabet::from_texts(["x#"], 1));
        let docs: Vec<(String, String)> = (0..9)
            .map(|i| {
                (
                    (if i % 2 == 0 { "#x\n" } else { "" }).to_string(),
                    "x".repeat(10 + i * 7),
                )
            })
            .collect();
        let lanes = eval_lanes(&docs, &a, 4, 50);
        assert_eq!(lanes.len(), 4);
        let chars: usize = lanes.iter().map(|l| l.ids.len()).sum();
        let context: usize = docs.iter().map(|d| d.0.len()).sum();
        let scored: usize = docs.iter().map(|d| d.1.len() + 2).sum();
        assert_eq!(chars, scored + context + 2 * lanes.len());
        let counted: usize = lanes
            .iter()
            .map(|l| l.scored.iter().filter(|&&b| b).count())
            .sum();
        assert_eq!(counted, scored);
        assert!(lanes.iter().all(|l| l.ids.len() == l.scored.len()));
    }

    #[test]
    fn keyword_documents_carry_a_subset_of_the_keywords() {
        let stories = vec!["The dog ran to the beach with a ball.".to_string()];
        let ex = KeywordExtractor::fit(["dog", "beach", "ball"], &stories);
        let p = Prefixer::Keywords {
            extractor: &ex,
            drop_prob: 0.2,
        };
        let mut rng = StdRng::seed_from_u64(9);
        let (mut with, mut without) = (0, 0);
        for _ in 0..200 {
            let d = p.document(&stories[0], &mut rng);
            let (tags, rest) = split_prefix(&d);
            assert_eq!(rest, format!("{}{DOC_SEP}", stories[0]));
            assert!(
                tags.len() <= 3
                    && tags
                        .iter()
                        .all(|t| ["dog", "beach", "ball"].contains(&t.as_str()))
            );
            if tags.is_empty() {
                without += 1;
            } else {
                with += 1;
            }
        }
        assert!(without > 15 && with > 130, "{with}/{without}");
    }

    #[test]
    fn pseudo_tags_are_content_words_of_the_story() {
        let mut rng = StdRng::seed_from_u64(3);
        let story = "We went to the beach. The water was cold!";
        for _ in 0..20 {
            let t = pseudo_tag(story, &mut rng).unwrap();
            assert!(["beach", "water", "cold"].contains(&t.as_str()), "{t}");
        }
        assert_eq!(pseudo_tag("It was so.", &mut rng), None);
        let d = document(story, 1.0, &mut rng);
        assert!(d.starts_with('#') && d.ends_with(&format!("{story}{DOC_SEP}")));
        assert_eq!(document(story, 0.0, &mut rng), format!("{story}{DOC_SEP}"));
    }

    #[test]
    fn epoch_stream_repeats_stories_by_weight() {
        let a = Codec::from(Alphabet::from_texts(["ab xy"], 1));
        let corpora = vec![(vec!["ab".to_string()], 3.0), (vec!["xy".to_string()], 1.0)];
        let s = a.decode(
            &epoch_stream(
                &corpora,
                &a,
                &Prefixer::PseudoTag(0.0),
                &mut StdRng::seed_from_u64(1),
            )
            .ids,
        );
        assert_eq!(s.matches("ab").count(), 3);
        assert_eq!(s.matches("xy").count(), 1);
        assert_eq!(s.len(), 2 + 4 * 4);
    }

    /// Every character is tagged with its document, the separator before a story with that story,
    /// and a document's keyword ids are the hashtags its prefix line spells.
    #[test]
    fn stream_characters_carry_their_documents_keywords() {
        let stories = vec![
            "The dog ran to the beach.".to_string(),
            "A cake for the party.".to_string(),
            "Rain all day.".to_string(),
        ];
        let ex = KeywordExtractor::fit(["dog", "beach", "cake", "party"], &stories);
        let a = Codec::from(Alphabet::from_texts(
            stories.iter().map(|s| s.as_str()).chain(["#\n"]),
            1,
        ));
        let p = Prefixer::Keywords {
            extractor: &ex,
            drop_prob: 0.0,
        };
        let s = epoch_stream(
            &[(stories.clone(), 2.0)],
            &a,
            &p,
            &mut StdRng::seed_from_u64(5),
        );
        assert_eq!(s.ids.len(), s.doc.len());
        assert_eq!(s.keywords.len(), 6);
        let text = a.decode(&s.ids);
        let docs: Vec<&str> = text[2..].split_terminator(DOC_SEP).collect();
        assert_eq!(docs.len(), 6);
        let mut pos = 0;
        for (i, d) in docs.iter().enumerate() {
            // The separator before the document, then the document, belong to it.
            let n = d.chars().count() + 2;
            assert!(
                s.doc[pos..pos + n].iter().all(|&x| x == i as u32),
                "doc {i}"
            );
            pos += n;
            let (tags, _) = split_prefix(d);
            assert_eq!(s.keywords[i], ex.ids(&tags), "{d}");
            assert_eq!(tags.is_empty(), d.starts_with("Rain"));
        }
        // The closing separator of the last document.
        assert_eq!(pos + 2, s.ids.len());
        assert!(s.doc[pos..].iter().all(|&x| x == 5));
    }

    #[test]
    fn lane_characters_belong_to_their_documents() {
        let a = Codec::from(Alphabet::from_texts(["xy#\n"], 1));
        let docs: Vec<(String, String)> = (0..6)
            .map(|i| ("#x\n".to_string(), "y".repeat(5 + i)))
            .collect();
        for lane in eval_lanes(&docs, &a, 2, 10) {
            assert_eq!(lane.doc.len(), lane.ids.len());
            // Each run of one document starts right after a separator and holds its story.
            let mut start = 0;
            while start < lane.doc.len() {
                let d = lane.doc[start];
                let end = start + lane.doc[start..].iter().take_while(|&&x| x == d).count();
                let text = a.decode(&lane.ids[start..end]);
                assert!(text.starts_with("\n\n#x\n"), "{text:?}");
                let story = &docs[d as usize].1;
                assert!(text.contains(story.as_str()));
                start = end;
            }
        }
    }
}
