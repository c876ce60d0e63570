//! Measures of generated stories that need no model: how many words are not English words,
//! how much a story repeats itself, how varied a set of stories is, and whether a story
//! mentions its hashtags.
use std::collections::HashSet;

use hashtale_models::story::keywords::mentions;

/// The lower-case words of a text: runs of letters and apostrophes, apostrophes trimmed.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphabetic() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// An English word list (one word per line, e.g. Debian's `wamerican`), lower-cased.
#[derive(Debug, Clone, Default)]
pub struct WordList {
    words: HashSet<String>,
}

impl WordList {
    pub fn parse(text: &str) -> Self {
        WordList {
            words: text
                .lines()
                .map(|l| l.trim().to_lowercase())
                .filter(|w| !w.is_empty())
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Whether `word` (lower case) is in the list, as itself or as a simple inflection of a
    /// listed word: possessive `'s`, plural `-s`/`-es`/`-ies`, `-ed`, `-ing` (with a doubled
    /// consonant or a dropped `e`), `-er`/`-est`, `-ly`, contractions `n't`, `'ll`, `'re`,
    /// `'ve`, `'d`, `'m`.
    pub fn knows(&self, word: &str) -> bool {
        let w = word.to_lowercase();
        if self.words.contains(&w) {
            return true;
        }
        for suffix in ["n't", "'s", "'ll", "'re", "'ve", "'d", "'m"] {
            if let Some(stem) = w.strip_suffix(suffix) {
                if stem.is_empty() || self.words.contains(stem) || self.knows_inflected(stem) {
                    return true;
                }
            }
        }
        self.knows_inflected(&w)
    }

    fn knows_inflected(&self, w: &str) -> bool {
        let has = |s: &str| !s.is_empty() && self.words.contains(s);
        let undouble = |s: &str| {
            let b = s.as_bytes();
            (b.len() >= 2 && b[b.len() - 1] == b[b.len() - 2]).then(|| s[..s.len() - 1].to_string())
        };
        for suffix in ["s", "es", "ed", "ing", "er", "est", "ly", "d", "r", "st"] {
            let Some(stem) = w.strip_suffix(suffix) else {
                continue;
            };
            if has(stem) || has(&format!("{stem}e")) || undouble(stem).is_some_and(|s| has(&s)) {
                return true;
            }
        }
        for (suffix, repl) in [
            ("ies", "y"),
            ("ied", "y"),
            ("ier", "y"),
            ("iest", "y"),
            ("ily", "y"),
        ] {
            if let Some(stem) = w.strip_suffix(suffix) {
                if has(&format!("{stem}{repl}")) {
                    return true;
                }
            }
        }
        false
    }

    /// Share of the words of `texts` that are not known (see [`WordList::knows`]), and the
    /// number of words.
    pub fn non_word_rate<S: AsRef<str>>(&self, texts: &[S]) -> (f64, usize) {
        let mut n = 0usize;
        let mut unknown = 0usize;
        for t in texts {
            for w in words(t.as_ref()) {
                n += 1;
                unknown += !self.knows(&w) as usize;
            }
        }
        (
            if n == 0 {
                0.0
            } else {
                unknown as f64 / n as f64
            },
            n,
        )
    }
}

fn ngrams(words: &[String], n: usize) -> impl Iterator<Item = &[String]> {
    words.windows(n)
}

/// Share of word 4-grams that repeat an earlier 4-gram of the same story, over all stories.
pub fn repeated_4gram_rate<S: AsRef<str>>(texts: &[S]) -> f64 {
    let mut total = 0usize;
    let mut repeated = 0usize;
    for t in texts {
        let w = words(t.as_ref());
        let mut seen = HashSet::new();
        for g in ngrams(&w, 4) {
            total += 1;
            repeated += !seen.insert(g) as usize;
        }
    }
    if total == 0 {
        0.0
    } else {
        repeated as f64 / total as f64
    }
}

/// Distinct word bigrams over all bigrams of all stories (distinct-2).
pub fn distinct_2<S: AsRef<str>>(texts: &[S]) -> f64 {
    let mut total = 0usize;
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for t in texts {
        let w = words(t.as_ref());
        for g in ngrams(&w, 2) {
            total += 1;
            seen.insert((g[0].clone(), g[1].clone()));
        }
    }
    if total == 0 {
        0.0
    } else {
        seen.len() as f64 / total as f64
    }
}

/// Share of stories that mention at least one of their hashtags (singular/plural forms count).
pub fn echo_rate<S: AsRef<str>>(tags: &[Vec<String>], texts: &[S]) -> f64 {
    let n = tags.len().min(texts.len());
    if n == 0 {
        return 0.0;
    }
    let echoed = tags
        .iter()
        .zip(texts)
        .filter(|(k, t)| k.iter().any(|w| mentions(t.as_ref(), w)))
        .count();
    echoed as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> WordList {
        WordList::parse("dog\ncat\nrun\nhappy\nbake\nstop\nbox\nfly\nbig\nthe\nwas\nbe\n")
    }

    #[test]
    fn inflections_count_as_words_and_nonsense_does_not() {
        let l = list();
        for w in [
            "dog", "dogs", "cat's", "running", "baked", "baking", "stopped", "boxes", "flies",
            "happily", "bigger", "biggest", "wasn't", "Dog",
        ] {
            assert!(l.knows(&w.to_lowercase()), "{w}");
        }
        for w in ["dogg", "catx", "runnning", "zorp"] {
            assert!(!l.knows(w), "{w}");
        }
        let (rate, n) = l.non_word_rate(&["The dog was happy.", "The zorp dogs flies."]);
        assert_eq!(n, 8);
        assert!((rate - 1.0 / 8.0).abs() < 1e-9);
    }

    #[test]
    fn repetition_and_distinct_2() {
        assert_eq!(repeated_4gram_rate(&["a b c d e f g"]), 0.0);
        // "a b c d" appears twice among 5 four-grams.
        let r = repeated_4gram_rate(&["a b c d a b c d"]);
        assert!((r - 1.0 / 5.0).abs() < 1e-9, "{r}");
        // The same 4-gram in two different stories is not a repeat.
        assert_eq!(repeated_4gram_rate(&["a b c d", "a b c d"]), 0.0);
        assert!((distinct_2(&["a b a b"]) - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(distinct_2(&["a b", "a b"]), 0.5);
    }

    #[test]
    fn echo_counts_stories_naming_a_tag() {
        let tags = vec![
            vec!["dog".to_string()],
            vec!["beach".to_string(), "cat".to_string()],
        ];
        assert_eq!(echo_rate(&tags, &["The dogs ran.", "It rained."]), 0.5);
    }
}
