//! Hashtag conditioning of the story model: the keywords of a story and the hashtag prefix that
//! carries them.
//!
//! Story corpora carry no hashtags, so training pairs are made from each story's own keywords:
//! words of the story that are also hashtags the product can emit (the hashtag model's tags and
//! HARRISON's 997 Instagram tags), ranked by TF-IDF across the training stories. At generation the
//! prefix holds the image's hashtags instead, so the story is written about them.
//!
//! Document format: `#beach #dog\n` + story + `\n\n`. With no hashtags the prefix is empty and the
//! document is the plain story.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::{Error, Result};

/// The most keywords a story gets, and the most hashtags a prefix holds.
pub const MAX_KEYWORDS: usize = 5;

/// File name of the keyword table inside a conditioned story checkpoint.
pub const KEYWORDS_FILE: &str = "keywords.tsv";

/// Function words and story filler that are hashtags somewhere (`#me`, `#day`) but say nothing
/// about what a story is about: never keywords. The one stop-word list; training's pseudo-tags
/// extend it (hashtale-train's `story::corpus`).
pub const STOP_WORDS: &[&str] = &[
    "about", "after", "again", "all", "also", "and", "any", "are", "back", "been", "before", "but",
    "can", "day", "did", "for", "from", "get", "got", "had", "has", "have", "her", "him", "his",
    "how", "its", "just", "like", "made", "make", "may", "more", "new", "not", "now", "one", "our",
    "out", "over", "she", "some", "than", "that", "the", "their", "them", "then", "they", "this",
    "time", "today", "too", "two", "very", "was", "way", "went", "were", "what", "when", "who",
    "why", "will", "with", "you", "your", "yes", "lol", "got", "let", "see", "say", "said",
];

/// Verbs, adverbs and vague adjectives of the vocabularies that name nothing one could see or
/// write a story around. The hashtag vocabularies are mostly nouns; these are the exceptions
/// frequent enough in story text to crowd the nouns out of the top five.
const UNTOPICAL: &str = "\
    ahead always attached believe beside best big break catch caught clear come coming \
    course cover covered cut direction doing early end enjoy feeling fit follow following \
    forever free full gathered give giving going good grab great half hang hanging having \
    held help high hit hold holding hope huge inside jumped lead leave leaving left little \
    live long look low making middle mine miss moving myself nearby nice number old older \
    only open other outside passing perfect pick point pretty pull pulled pulling put \
    putting raise raised random reach ready real rest right round row same seen set setting \
    short show showing sit sitting smaller spotted stand staring step stop suspended take \
    taking talk talking third tight together top touch true try trying turn turning use \
    using wait waiting wear weird wow younger";

/// Whether a word can never be a keyword.
fn is_stop(word: &str) -> bool {
    STOP_WORDS.contains(&word) || UNTOPICAL.split_whitespace().any(|w| w == word)
}

/// A hashtag's text as the prefix writes it: lower case, letters, digits and `_` only, without a
/// leading `#`. Empty when nothing is left.
pub fn normalize_tag(tag: &str) -> String {
    tag.trim()
        .trim_start_matches('#')
        .chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The prefix line for some hashtags: `#a #b\n`, at most [`MAX_KEYWORDS`] distinct non-empty tags
/// in the order given; empty for none.
pub fn format_prefix<S: AsRef<str>>(tags: &[S]) -> String {
    let tags = prefix_tags(tags);
    if tags.is_empty() {
        return String::new();
    }
    let mut p = tags
        .iter()
        .map(|t| format!("#{t}"))
        .collect::<Vec<_>>()
        .join(" ");
    p.push('\n');
    p
}

/// The tags [`format_prefix`] writes: normalised, deduplicated, non-empty, at most
/// [`MAX_KEYWORDS`].
pub fn prefix_tags<S: AsRef<str>>(tags: &[S]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = normalize_tag(t.as_ref());
        if !t.is_empty() && !out.contains(&t) {
            out.push(t);
        }
        if out.len() == MAX_KEYWORDS {
            break;
        }
    }
    out
}

/// Splits a document into its prefix hashtags and the story: the inverse of [`format_prefix`]
/// followed by the story. A first line that is not all hashtags is story, not prefix.
pub fn split_prefix(doc: &str) -> (Vec<String>, &str) {
    if let Some((first, rest)) = doc.split_once('\n') {
        let words: Vec<&str> = first.split(' ').collect();
        let all_tags = !first.is_empty()
            && words
                .iter()
                .all(|w| w.len() > 1 && w.starts_with('#') && normalize_tag(w) == w[1..]);
        if all_tags {
            return (words.iter().map(|w| w[1..].to_string()).collect(), rest);
        }
    }
    (Vec::new(), doc)
}

/// Lower-case words of a text (letters only; apostrophes end a word, so "dog's" gives "dog").
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
}

/// Singular forms a plural word may come from: "dogs" → "dog", "beaches" → "beach",
/// "puppies" → "puppy". The caller keeps the ones that are in its vocabulary.
pub fn singular_candidates(word: &str) -> Vec<String> {
    let mut c = Vec::new();
    if let Some(stem) = word.strip_suffix("ies") {
        if stem.len() >= 2 {
            c.push(format!("{stem}y"));
        }
    }
    if let Some(stem) = word.strip_suffix("es") {
        if stem.len() >= 3 {
            c.push(stem.to_string());
        }
    }
    if let Some(stem) = word.strip_suffix('s') {
        if stem.len() >= 3 && !stem.ends_with('s') {
            c.push(stem.to_string());
        }
    }
    c
}

/// Whether `text` mentions `word` or its plural/singular form (used by the hashtag-echo
/// evaluation).
pub fn mentions(text: &str, word: &str) -> bool {
    let word = normalize_tag(word);
    if word.is_empty() {
        return false;
    }
    // The tag's singular forms, for a text that has the singular of a plural tag.
    let tag_singulars = singular_candidates(&word);
    words(text)
        .any(|w| w == word || tag_singulars.contains(&w) || singular_candidates(&w).contains(&word))
}

/// Picks the keywords of stories: vocabulary words ranked by TF-IDF.
///
/// - A word of the story counts when it, or its singular form, is in the vocabulary (3+ letters,
///   not a stop word); plurals count as the vocabulary's form.
/// - score = tf · idf with tf = occurrences in the story and idf = ln((1 + N) / (1 + df)) + 1
///   over the N stories the extractor was fitted on (smoothed, so a word seen in every story
///   still scores above zero).
/// - The top [`MAX_KEYWORDS`] by score (ties: the earlier first occurrence) are the keywords.
#[derive(Debug, Clone, PartialEq)]
pub struct KeywordExtractor {
    /// idf of every vocabulary word, unseen words included (df = 0).
    idf: BTreeMap<String, f64>,
}

impl KeywordExtractor {
    /// Fits the idf table of `vocab` on `stories`.
    pub fn fit<S: AsRef<str>>(vocab: impl IntoIterator<Item = S>, stories: &[String]) -> Self {
        // The vocabulary first (idf filled in below), so counting uses the same `lookup` as
        // extraction.
        let mut ex = KeywordExtractor {
            idf: vocab
                .into_iter()
                .map(|w| normalize_tag(w.as_ref()))
                .filter(|w| {
                    w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase()) && !is_stop(w)
                })
                .map(|w| (w, 0.0))
                .collect(),
        };
        let mut df: HashMap<String, usize> = HashMap::new();
        for s in stories {
            let seen: HashSet<String> = words(s).filter_map(|w| ex.lookup(&w)).collect();
            for w in seen {
                *df.entry(w).or_default() += 1;
            }
        }
        let n = stories.len() as f64;
        for (w, idf) in ex.idf.iter_mut() {
            let d = df.get(w).copied().unwrap_or(0) as f64;
            *idf = ((1.0 + n) / (1.0 + d)).ln() + 1.0;
        }
        ex
    }

    /// Number of vocabulary words.
    pub fn len(&self) -> usize {
        self.idf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.idf.is_empty()
    }

    /// The vocabulary words in id order (the rows of a keyword table).
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.idf.keys().map(String::as_str)
    }

    /// Whether `tag` (or its singular) is a keyword the model was trained with.
    pub fn knows(&self, tag: &str) -> bool {
        self.id(tag).is_some()
    }

    /// The keyword's row in a conditioned model's keyword table: its rank in the sorted
    /// vocabulary (the order of [`KeywordExtractor::save`]). Plurals map to the singular.
    pub fn id(&self, tag: &str) -> Option<u32> {
        let word = self.lookup(&normalize_tag(tag))?;
        self.idf.range(..word).count().try_into().ok()
    }

    /// The ids of the known tags among `tags`, each once, in order.
    pub fn ids<S: AsRef<str>>(&self, tags: &[S]) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for id in tags.iter().filter_map(|t| self.id(t.as_ref())) {
            if !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    /// The story's keywords with their scores, best first, at most [`MAX_KEYWORDS`].
    pub fn scored(&self, story: &str) -> Vec<(String, f64)> {
        let mut tf: HashMap<String, (usize, usize)> = HashMap::new(); // word → (count, first position)
        for (pos, w) in words(story).enumerate() {
            if let Some(v) = self.lookup(&w) {
                tf.entry(v).or_insert((0, pos)).0 += 1;
            }
        }
        let mut ranked: Vec<(String, f64, usize)> = tf
            .into_iter()
            .map(|(w, (n, first))| {
                let s = n as f64 * self.idf[&w];
                (w, s, first)
            })
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
        ranked.truncate(MAX_KEYWORDS);
        ranked.into_iter().map(|(w, s, _)| (w, s)).collect()
    }

    /// The story's keywords, best first.
    pub fn extract(&self, story: &str) -> Vec<String> {
        self.scored(story).into_iter().map(|(w, _)| w).collect()
    }

    fn lookup(&self, word: &str) -> Option<String> {
        if is_stop(word) {
            return None;
        }
        if self.idf.contains_key(word) {
            return Some(word.to_string());
        }
        singular_candidates(word)
            .into_iter()
            .find(|s| self.idf.contains_key(s))
    }

    /// Writes `word<TAB>idf` lines, sorted by word.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = String::from("# hashtale story keywords: word<TAB>idf\n");
        for (w, idf) in &self.idf {
            text.push_str(&format!("{w}\t{idf:.6}\n"));
        }
        std::fs::write(path, text).map_err(|e| Error::io(path, e))
    }

    /// Reads a table written by [`KeywordExtractor::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut idf = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let parsed = line
                .split_once('\t')
                .and_then(|(w, v)| Some((w.to_string(), v.trim().parse::<f64>().ok()?)));
            let Some((w, v)) = parsed else {
                return Err(Error::msg(format!(
                    "{}:{}: expected word<TAB>idf",
                    path.display(),
                    i + 1
                )));
            };
            idf.insert(w, v);
        }
        Ok(KeywordExtractor { idf })
    }
}

/// The copy forms of every keyword of `ex` under `codec`, in id order: what a keyword-copy
/// model ([`super::charlm::CharLmConfig::copy`]) may copy.
pub fn copy_table(ex: &KeywordExtractor, codec: &super::codec::Codec) -> super::copy::CopyTable {
    super::copy::CopyTable::for_words(ex.words(), codec)
}

/// Reads a hashtag vocabulary file: one word per line, or `word<whitespace>anything` (HARRISON's
/// `vocab_index.txt`), the concept table (`assets/concepts/concepts.tsv`: its hashtags), or a tag
/// model's `config.json` (its `vocab` list). `#` comments and blank
/// lines are skipped.
pub fn read_vocab(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if path.extension().is_some_and(|e| e == "json") {
        let v: serde_json::Value = serde_json::from_str(&text)?;
        // `vocab` is a list, or (tag model checkpoints) an object with a `tokens` list.
        let vocab = v.get("vocab");
        let list = vocab
            .and_then(|v| v.as_array())
            .or_else(|| {
                vocab
                    .and_then(|v| v.get("tokens"))
                    .and_then(|t| t.as_array())
            })
            .ok_or_else(|| Error::msg(format!("{}: no \"vocab\" list", path.display())))?;
        // Special tokens such as `<end>` are not hashtags.
        return Ok(list
            .iter()
            .filter_map(|w| w.as_str())
            .filter(|w| !w.starts_with('<'))
            .map(str::to_string)
            .collect());
    }
    // The concept table (`index<TAB>wnid<TAB>class<TAB>tag:zipf …`) gives its hashtags.
    let concept_tags = |l: &str| -> Option<Vec<String>> {
        let f: Vec<&str> = l.split('\t').collect();
        (f.len() == 4 && f[3].contains(':')).then(|| {
            f[3].split_whitespace()
                .filter_map(|t| t.split(':').next().map(str::to_string))
                .collect()
        })
    };
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| {
            concept_tags(l).unwrap_or_else(|| {
                l.split_whitespace()
                    .next()
                    .map(str::to_string)
                    .into_iter()
                    .collect()
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_vocab_takes_the_concept_tables_hashtags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("concepts.tsv");
        std::fs::write(
            &p,
            "# index\twnid\tclass\thashtag:zipf\n0\tn1\ttabby\ttabby:3.1 cat:5.2\n1\tn2\tespresso\tespresso:3.9 coffee:5.1\n",
        )
        .unwrap();
        assert_eq!(
            read_vocab(&p).unwrap(),
            ["tabby", "cat", "espresso", "coffee"]
        );
        let p = dir.path().join("vocab_index.txt");
        std::fs::write(&p, "dog 1\nbeach 2\n").unwrap();
        assert_eq!(read_vocab(&p).unwrap(), ["dog", "beach"]);
    }

    #[test]
    fn prefix_round_trips() {
        let tags = ["#Beach", "dog", "#beach", "", "ice_cream"];
        let p = format_prefix(&tags);
        assert_eq!(p, "#beach #dog #ice_cream\n");
        let doc = format!("{p}We swam all day.");
        let (t, story) = split_prefix(&doc);
        assert_eq!(t, ["beach", "dog", "ice_cream"]);
        assert_eq!(story, "We swam all day.");
        assert_eq!(format_prefix::<&str>(&[]), "");
        assert_eq!(
            split_prefix("We swam.\nThen we ate."),
            (vec![], "We swam.\nThen we ate.")
        );
        assert_eq!(split_prefix("#1 in class\nstory").0, Vec::<String>::new());
        let many: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
        assert_eq!(prefix_tags(&many).len(), MAX_KEYWORDS);
    }

    #[test]
    fn plural_and_singular_match() {
        assert!(mentions("Two dogs ran.", "dog"));
        assert!(mentions("The dog ran.", "#dogs"));
        assert!(mentions("Beaches are fun", "beach"));
        assert!(mentions("the puppies slept", "puppy"));
        assert!(!mentions("a doghouse", "dog"));
        assert!(!mentions("anything", ""));
    }

    /// The documented result on a fixed text: tf · idf, ties by first occurrence.
    #[test]
    fn extraction_on_a_fixed_text() {
        let vocab = [
            "beach", "dog", "ball", "water", "friend", "the", "sun", "car",
        ];
        let stories: Vec<String> = [
            "My dog and I went to the beach. The dogs chased a ball into the water.",
            "I drove my car to see a friend.",
            "The sun was out and my friend came over.",
            "The water was cold.",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let ex = KeywordExtractor::fit(vocab, &stories);
        // "the" is a stop word; the other 7 words stay.
        assert_eq!(ex.len(), 7);
        // N = 4: dog (df 1, tf 2) = 2·(ln(5/2)+1); beach, ball (df 1, tf 1) = ln(5/2)+1;
        // water (df 2, tf 1) = ln(5/3)+1.
        let s = ex.scored(&stories[0]);
        let words: Vec<&str> = s.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(words, ["dog", "beach", "ball", "water"]);
        assert!((s[0].1 - 2.0 * ((2.5f64).ln() + 1.0)).abs() < 1e-9);
        assert!((s[3].1 - ((5.0f64 / 3.0).ln() + 1.0)).abs() < 1e-9);
        assert_eq!(ex.extract("Nothing here matches."), Vec::<String>::new());
        assert!(ex.knows("#Dogs") && !ex.knows("cat"));
    }

    #[test]
    fn table_round_trips() {
        let stories = vec!["a dog and a ball".to_string(), "a dog".to_string()];
        let ex = KeywordExtractor::fit(["dog", "ball"], &stories);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(KEYWORDS_FILE);
        ex.save(&p).unwrap();
        let back = KeywordExtractor::load(&p).unwrap();
        assert_eq!(back.extract("ball dog ball"), ex.extract("ball dog ball"));
        std::fs::write(&p, "dog 1.0\n").unwrap();
        assert!(KeywordExtractor::load(&p)
            .unwrap_err()
            .to_string()
            .contains(":1:"));
    }

    /// Ids are ranks in the saved (sorted) order, so a loaded table gives the ids the model was
    /// trained with; plurals share the singular's id, unknown tags have none.
    #[test]
    fn keyword_ids_follow_the_saved_order() {
        let ex = KeywordExtractor::fit(["dog", "ball", "beach"], &[]);
        assert_eq!(ex.id("ball"), Some(0));
        assert_eq!(ex.id("#Beaches"), Some(1));
        assert_eq!(ex.id("dogs"), Some(2));
        assert_eq!(ex.id("cat"), None);
        assert_eq!(ex.ids(&["dog", "cat", "Dogs", "ball"]), [2, 0]);
        assert_eq!(ex.ids::<&str>(&[]), Vec::<u32>::new());
    }
}
