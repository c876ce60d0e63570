//! Story corpora: plain UTF-8 text, one story per paragraph, stories separated by blank lines.
//!
//! Also the dev split (held out by story, so no story leaks between train and dev) and the
//! character streams the model is trained on. The alphabet and document format are the model's
//! (`hashtale_models::story::codec`); evaluation lanes are in `hashtale_models::story::eval`.
use std::path::{Path, PathBuf};

use hashtale_models::story::codec::{Codec, DOC_SEP};
use hashtale_models::story::keywords::{format_prefix, KeywordExtractor, STOP_WORDS};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

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

/// Narrative filler that makes a poor pseudo-hashtag, on top of the keyword stop words
/// ([`STOP_WORDS`]): a pseudo-tag is never one of either list. The base list's words of 4+
/// letters were all in this list before the two were joined, so the pseudo-tags drawn are the same.
const PSEUDO_TAG_STOP: &[&str] = &[
    "always",
    "another",
    "around",
    "because",
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
    "going",
    "having",
    "here",
    "into",
    "know",
    "many",
    "much",
    "must",
    "never",
    "next",
    "only",
    "other",
    "really",
    "same",
    "should",
    "since",
    "something",
    "still",
    "such",
    "there",
    "these",
    "thing",
    "things",
    "those",
    "through",
    "wanted",
    "where",
    "which",
    "while",
    "would",
    "yesterday",
    "finally",
    "later",
    "felt",
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
    "days",
    "better",
    "little",
    "great",
    "good",
    "sure",
    "need",
    "needed",
    "away",
];

/// Whether a word can never be a pseudo-hashtag.
fn is_pseudo_tag_stop(word: &str) -> bool {
    STOP_WORDS.contains(&word) || PSEUDO_TAG_STOP.contains(&word)
}

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
                && !is_pseudo_tag_stop(w)
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

#[cfg(test)]
mod tests {
    use super::*;
    use hashtale_models::story::codec::Alphabet;
    use hashtale_models::story::keywords::split_prefix;

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
    fn split_is_by_story_and_deterministic() {
        let stories: Vec<String> = (0..20).map(|i| format!("story {i}.")).collect();
        let (tr, dev) = split_dev(&stories, 0.1, 7);
        assert_eq!(dev.len(), 2);
        assert_eq!(tr.len(), 18);
        assert!(dev.iter().all(|d| !tr.contains(d)));
        assert_eq!(split_dev(&stories, 0.1, 7).1, dev);
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
}
