//! Hashtag evaluation metrics, so that every decoder is scored the same way as the papers we
//! compare against.
//!
//! Input is a set of images, each an `(ground_truth, ranked_prediction)` pair of tag lists.
//!
//! * **P@1, R@5, A@5** follow the HARRISON paper (Park et al. 2016): P@1 is the fraction of
//!   images whose top prediction is in the ground truth, R@5 the mean over images of
//!   `|top5 ∩ GT| / |GT|`, A@5 the fraction of images with at least one top-5 tag in the ground
//!   truth.
//! * **Per-word precision / recall / F1 and N+** follow the Corel5k annotation protocol with
//!   5 tags per image (see [`word_stats`] for which words are averaged).
//! * **BLEU-1** is reported two ways: the standard one ([`bleu1`], prediction as hypothesis,
//!   ground truth as reference) and the one the seed deck used ([`bleu1_seed`], the roles
//!   swapped), kept only so old numbers can be reproduced.
//!
//! Conventions shared by every metric here:
//! * A tag repeated in a list counts once (the first occurrence keeps its rank). The top-k
//!   of a prediction is its first `k` entries with repeats dropped, so a model that repeats
//!   itself gets fewer distinct tags, never tags from beyond rank `k`.
//! * An image with an empty ground truth is kept in every denominator and scores 0 on the
//!   per-image metrics (nothing can be hit); it adds no word to the per-word vocabulary.
//! * An empty prediction scores 0 everywhere; an empty set of images gives all zeros.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// Number of tags each image is annotated with in the per-word protocol and cut-off of
/// R@5 / A@5.
pub const TOP_K: usize = 5;

/// All the hashtag metrics of one evaluation run, as written to the results tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagMetrics {
    /// Precision@1 (HARRISON).
    pub p_at_1: f64,
    /// Recall@5 (HARRISON).
    pub r_at_5: f64,
    /// Accuracy@5 (HARRISON).
    pub a_at_5: f64,
    /// Mean per-word precision over the ground-truth vocabulary (Corel5k, 5 tags per image).
    pub word_precision: f64,
    /// Mean per-word recall over the ground-truth vocabulary.
    pub word_recall: f64,
    /// F1 of `word_precision` and `word_recall`.
    pub word_f1: f64,
    /// Number of ground-truth words recalled at least once.
    pub n_plus: usize,
    /// Mean sentence-level standard BLEU-1 (prediction vs ground truth).
    pub bleu1: f64,
    /// Mean sentence-level BLEU-1 as the seed deck computed it (ground truth vs prediction).
    pub bleu1_seed: f64,
    /// Number of images evaluated.
    pub images: usize,
}

/// Per-word annotation statistics (Corel5k protocol).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordStats {
    /// Mean over the vocabulary words of per-word precision.
    pub precision: f64,
    /// Mean over the vocabulary words of per-word recall.
    pub recall: f64,
    /// `2PR / (P + R)` from the two means (0 when both are 0).
    pub f1: f64,
    /// Number of vocabulary words with recall > 0.
    pub n_plus: usize,
    /// Number of vocabulary words averaged over (distinct words of the ground truth).
    pub words: usize,
}

/// The distinct tags of a list in first-occurrence order.
fn distinct<S: AsRef<str>>(tags: &[S]) -> Vec<&str> {
    let mut seen = HashSet::new();
    tags.iter()
        .map(AsRef::as_ref)
        .filter(|t| seen.insert(*t))
        .collect()
}

/// The first `k` entries of a ranked prediction, repeats dropped.
fn top_k<S: AsRef<str>>(prediction: &[S], k: usize) -> Vec<&str> {
    distinct(&prediction[..k.min(prediction.len())])
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len();
    if n == 0 {
        0.0
    } else {
        values.sum::<f64>() / n as f64
    }
}

/// Precision@1: fraction of images whose top-ranked tag is in the ground truth.
pub fn precision_at_1(items: &[(Vec<String>, Vec<String>)]) -> f64 {
    let hits = items
        .iter()
        .filter(|(gt, pred)| pred.first().is_some_and(|top| gt.contains(top)))
        .count();
    ratio(hits, items.len())
}

/// Recall@k: mean over images of `|topk ∩ GT| / |GT|` (distinct tags on both sides).
pub fn recall_at_k(items: &[(Vec<String>, Vec<String>)], k: usize) -> f64 {
    mean(items.iter().map(|(gt, pred)| {
        let gt = distinct(gt);
        let hits = top_k(pred, k).iter().filter(|t| gt.contains(t)).count();
        ratio(hits, gt.len())
    }))
}

/// Accuracy@k: fraction of images with at least one top-k tag in the ground truth.
pub fn accuracy_at_k(items: &[(Vec<String>, Vec<String>)], k: usize) -> f64 {
    let hits = items
        .iter()
        .filter(|(gt, pred)| top_k(pred, k).iter().any(|t| gt.iter().any(|g| g == t)))
        .count();
    ratio(hits, items.len())
}

/// Per-word precision, recall, F1 and N+ (Corel5k protocol).
///
/// Each image is annotated with the first `k` tags of its prediction (the protocol uses
/// `k = 5`, see [`TOP_K`]). The protocol expects exactly `k` tags per image: this function
/// does not pad, it counts what is given (a shorter or repeating list simply annotates the
/// image with fewer words), so the caller is responsible for filling short predictions up to
/// `k` (e.g. from [`frequency_prior`]).
///
/// For a word `w`: precision = #images correctly annotated with `w` / #images annotated with
/// `w`, recall = #images correctly annotated with `w` / #images with `w` in the ground truth.
/// Both are averaged over **every distinct word of the ground truth of `items`**; a word the
/// model never predicts has precision 0 (not excluded). Predicted words absent from the
/// ground truth do not enter the averages. F1 is computed from the two means, and N+ is the
/// number of averaged words with recall > 0.
pub fn word_stats(items: &[(Vec<String>, Vec<String>)], k: usize) -> WordStats {
    #[derive(Default)]
    struct Counts {
        in_gt: usize,
        predicted: usize,
        correct: usize,
    }
    let mut counts: HashMap<&str, Counts> = HashMap::new();
    for (gt, _) in items {
        for w in distinct(gt) {
            counts.entry(w).or_default().in_gt += 1;
        }
    }
    for (gt, pred) in items {
        for w in top_k(pred, k) {
            // Words outside the ground-truth vocabulary cannot enter the averages.
            if let Some(c) = counts.get_mut(w) {
                c.predicted += 1;
                if gt.iter().any(|g| g == w) {
                    c.correct += 1;
                }
            }
        }
    }
    let precision = mean(counts.values().map(|c| ratio(c.correct, c.predicted)));
    let recall = mean(counts.values().map(|c| ratio(c.correct, c.in_gt)));
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    WordStats {
        precision,
        recall,
        f1,
        n_plus: counts.values().filter(|c| c.correct > 0).count(),
        words: counts.len(),
    }
}

/// Sentence-level BLEU-1: clipped unigram precision of `hypothesis` against `reference`
/// times the brevity penalty `exp(1 - r/c)` when the hypothesis is not longer than the
/// reference (`c` = hypothesis length, `r` = reference length), 1 otherwise.
///
/// Standard usage for tags: hypothesis = prediction, reference = ground truth. Counts follow
/// BLEU exactly (a repeated hypothesis word is clipped to its count in the reference);
/// [`evaluate`] removes repeats before calling it. An empty hypothesis scores 0.
pub fn bleu1<S: AsRef<str>, T: AsRef<str>>(hypothesis: &[S], reference: &[T]) -> f64 {
    let c = hypothesis.len();
    if c == 0 {
        return 0.0;
    }
    let r = reference.len();
    let mut ref_counts: HashMap<&str, usize> = HashMap::new();
    for w in reference {
        *ref_counts.entry(w.as_ref()).or_default() += 1;
    }
    let mut matched = 0;
    for w in hypothesis {
        if let Some(left) = ref_counts.get_mut(w.as_ref()) {
            if *left > 0 {
                *left -= 1;
                matched += 1;
            }
        }
    }
    let precision = matched as f64 / c as f64;
    let brevity = if c > r {
        1.0
    } else {
        (1.0 - r as f64 / c as f64).exp()
    };
    precision * brevity
}

/// BLEU-1 as the seed deck computed it: the ground truth is the hypothesis and the prediction
/// the reference (so the brevity penalty punishes long predictions, and the precision is
/// really a recall of the ground truth). Kept only to reproduce the deck's numbers; report
/// [`bleu1`] as the real figure.
pub fn bleu1_seed<S: AsRef<str>, T: AsRef<str>>(ground_truth: &[S], prediction: &[T]) -> f64 {
    bleu1(ground_truth, prediction)
}

/// All metrics over `items`, each `(ground_truth, ranked_prediction)`.
///
/// P@1, R@5, A@5 and the per-word figures use the first [`TOP_K`] entries of each prediction
/// (see [`word_stats`]: the caller must fill predictions to 5 tags). BLEU-1 uses the whole
/// prediction, repeats removed, and the corpus-level BLEU figures are the **mean of the
/// sentence-level BLEU-1 over images** (not the pooled-count corpus BLEU).
pub fn evaluate(items: &[(Vec<String>, Vec<String>)]) -> TagMetrics {
    let words = word_stats(items, TOP_K);
    let bleu_pairs: Vec<(Vec<&str>, Vec<&str>)> = items
        .iter()
        .map(|(gt, pred)| (distinct(gt), distinct(pred)))
        .collect();
    TagMetrics {
        p_at_1: precision_at_1(items),
        r_at_5: recall_at_k(items, TOP_K),
        a_at_5: accuracy_at_k(items, TOP_K),
        word_precision: words.precision,
        word_recall: words.recall,
        word_f1: words.f1,
        n_plus: words.n_plus,
        bleu1: mean(bleu_pairs.iter().map(|(gt, pred)| bleu1(pred, gt))),
        bleu1_seed: mean(bleu_pairs.iter().map(|(gt, pred)| bleu1_seed(gt, pred))),
        images: items.len(),
    }
}

/// The `n` most frequent tags of the training set, for the frequency-prior baseline (every
/// image gets the same prediction). Frequency = number of training images carrying the tag
/// (a tag repeated within one image counts once); ties are broken alphabetically. Returns
/// fewer than `n` tags when the training vocabulary is smaller.
pub fn frequency_prior(train: &[Vec<String>], n: usize) -> Vec<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for tags in train {
        for t in distinct(tags) {
            *counts.entry(t).or_default() += 1;
        }
    }
    let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    ranked
        .into_iter()
        .take(n)
        .map(|(t, _)| t.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn item(gt: &str, pred: &str) -> (Vec<String>, Vec<String>) {
        (tags(gt), tags(pred))
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Four images covering a hit, a miss, an empty prediction and a repeated tag.
    fn fixture() -> Vec<(Vec<String>, Vec<String>)> {
        vec![
            item("cat cute", "cat dog cute a b c"),
            item("dog", "cute x y z w"),
            item("sun sea beach", ""),
            item("cat", "dog dog cat"),
        ]
    }

    #[test]
    fn seed_deck_bleu_is_reproduced() {
        // (ground truth, prediction, deck value), deck values given to 4 decimals.
        let cases = [
            ("selfie", "girl polishgirl selfie black white eye", 0.0067),
            ("friend happy", "friend", 0.5),
            // exp(-1) = 0.36788; the deck truncated it to 0.3678.
            ("tired", "tired selfie", 0.3678),
            ("tattoo", "tattoo ink inked", 0.1353),
            (
                "nba lakers shoot nike mambaday kobe history family",
                "kobebryant lakers nike",
                0.25,
            ),
        ];
        for (gt, pred, want) in cases {
            let got = bleu1_seed(&tags(gt), &tags(pred));
            assert!(close(got, want, 1e-4), "{gt} / {pred}: {got} vs {want}");
        }
        // Exact values behind the rounded ones.
        assert!(close(
            bleu1_seed(&tags("selfie"), &tags("a b selfie d e f")),
            (-5f64).exp(),
            1e-12
        ));
        assert!(close(
            bleu1_seed(&tags("tattoo"), &tags("tattoo ink inked")),
            (-2f64).exp(),
            1e-12
        ));
    }

    #[test]
    fn standard_bleu_swaps_roles() {
        // Prediction of 6 with one hit against a 1-tag truth: 1/6, no brevity penalty.
        let got = bleu1(
            &tags("girl polishgirl selfie black white eye"),
            &tags("selfie"),
        );
        assert!(close(got, 1.0 / 6.0, 1e-12));
        // Prediction [friend] vs truth [friend happy]: precision 1, BP = exp(1 - 2/1).
        let got = bleu1(&tags("friend"), &tags("friend happy"));
        assert!(close(got, (-1f64).exp(), 1e-12));
        // Equal lengths: no penalty.
        assert!(close(bleu1(&tags("a b"), &tags("b c")), 0.5, 1e-12));
    }

    #[test]
    fn bleu_edge_cases() {
        let empty: Vec<String> = Vec::new();
        assert_eq!(bleu1(&empty, &tags("a")), 0.0);
        assert_eq!(bleu1(&tags("a"), &empty), 0.0);
        assert_eq!(bleu1(&empty, &empty), 0.0);
        // Clipping: "cat" twice in the hypothesis matches the single reference "cat" once.
        assert!(close(
            bleu1(&tags("cat cat dog"), &tags("cat")),
            1.0 / 3.0,
            1e-12
        ));
    }

    #[test]
    fn ranked_metrics_by_hand() {
        let items = fixture();
        // Top-1 hits: image 1 only.
        assert!(close(precision_at_1(&items), 0.25, 1e-12));
        // Recall@5: 2/2, 0/1, 0/3, 1/1 -> 2/4.
        assert!(close(recall_at_k(&items, 5), 0.5, 1e-12));
        // Accuracy@5: images 1 and 4.
        assert!(close(accuracy_at_k(&items, 5), 0.5, 1e-12));
    }

    #[test]
    fn duplicates_count_once_and_do_not_extend_top_k() {
        // A repeated predicted tag counts once for recall.
        let items = vec![item("cat", "cat cat cat")];
        assert_eq!(recall_at_k(&items, 5), 1.0);
        // Repeated ground truth counts once in the denominator.
        let items = vec![item("cat cat dog", "cat")];
        assert!(close(recall_at_k(&items, 5), 0.5, 1e-12));
        // Top-5 is the first five entries: "cat" at rank 6 is not reached.
        let items = vec![item("cat", "a a a a a cat")];
        assert_eq!(accuracy_at_k(&items, 5), 0.0);
        assert_eq!(recall_at_k(&items, 5), 0.0);
        // Repeats annotate an image once per word in the per-word protocol.
        let items = vec![item("cat", "cat cat b c d")];
        let s = word_stats(&items, 5);
        assert_eq!((s.precision, s.recall, s.n_plus, s.words), (1.0, 1.0, 1, 1));
    }

    #[test]
    fn per_word_stats_by_hand() {
        let s = word_stats(&fixture(), 5);
        // Vocabulary: cat, cute, dog, sun, sea, beach.
        //   cat : GT {1,4}, annotated {1,4}, correct {1,4} -> P 1,   R 1
        //   cute: GT {1},   annotated {1,2}, correct {1}   -> P 1/2, R 1
        //   dog : GT {2},   annotated {1,4}, correct {}    -> P 0,   R 0
        //   sun, sea, beach: never annotated                -> P 0,   R 0
        assert_eq!(s.words, 6);
        assert!(close(s.precision, 1.5 / 6.0, 1e-12));
        assert!(close(s.recall, 2.0 / 6.0, 1e-12));
        // F1 = 2 * 1/4 * 1/3 / (1/4 + 1/3) = 2/7.
        assert!(close(s.f1, 2.0 / 7.0, 1e-12));
        assert_eq!(s.n_plus, 2);
    }

    #[test]
    fn per_word_counts_what_is_given_when_short() {
        // Only 2 tags given (caller did not fill): both count, nothing is padded.
        let items = vec![item("a b", "a z"), item("b", "b")];
        let s = word_stats(&items, 5);
        // a: GT {1}, ann {1}, ok {1}; b: GT {1,2}, ann {2}, ok {2}.
        assert!(close(s.precision, 1.0, 1e-12));
        assert!(close(s.recall, (1.0 + 0.5) / 2.0, 1e-12));
        assert_eq!(s.n_plus, 2);
        // k bounds the annotation: with k = 1 image 1 keeps only "a".
        let items = vec![item("b", "a b")];
        let s = word_stats(&items, 1);
        assert_eq!((s.precision, s.recall, s.n_plus), (0.0, 0.0, 0));
    }

    #[test]
    fn evaluate_by_hand() {
        let m = evaluate(&fixture());
        assert_eq!(m.images, 4);
        assert!(close(m.p_at_1, 0.25, 1e-12));
        assert!(close(m.r_at_5, 0.5, 1e-12));
        assert!(close(m.a_at_5, 0.5, 1e-12));
        assert!(close(m.word_precision, 0.25, 1e-12));
        assert!(close(m.word_recall, 1.0 / 3.0, 1e-12));
        assert!(close(m.word_f1, 2.0 / 7.0, 1e-12));
        assert_eq!(m.n_plus, 2);
        // Standard BLEU-1 per image (prediction vs truth, repeats removed):
        //   2 hits of 6 -> 1/3; 0; empty prediction -> 0; [dog cat] vs [cat] -> 1/2.
        assert!(close(m.bleu1, (1.0 / 3.0 + 0.5) / 4.0, 1e-12));
        // Seed BLEU-1 (truth vs prediction):
        //   [cat cute] vs 6 -> exp(1 - 3); [dog] -> 0; empty reference -> 0;
        //   [cat] vs [dog cat] -> exp(1 - 2).
        let want = ((-2f64).exp() + (-1f64).exp()) / 4.0;
        assert!(close(m.bleu1_seed, want, 1e-12));
    }

    #[test]
    fn evaluate_edge_cases() {
        let m = evaluate(&[]);
        assert_eq!(m.images, 0);
        assert_eq!(m.n_plus, 0);
        for v in [
            m.p_at_1,
            m.r_at_5,
            m.a_at_5,
            m.word_precision,
            m.word_recall,
            m.word_f1,
            m.bleu1,
            m.bleu1_seed,
        ] {
            assert_eq!(v, 0.0);
        }
        // Empty predictions everywhere: all zero, the vocabulary is still counted.
        let m = evaluate(&[item("a b", ""), item("c", "")]);
        assert_eq!((m.p_at_1, m.r_at_5, m.a_at_5), (0.0, 0.0, 0.0));
        assert_eq!((m.word_precision, m.word_recall, m.n_plus), (0.0, 0.0, 0));
        // Empty ground truth stays in the denominators and scores 0.
        let m = evaluate(&[item("", "a"), item("a", "a")]);
        assert!(close(m.p_at_1, 0.5, 1e-12));
        assert!(close(m.r_at_5, 0.5, 1e-12));
        assert!(close(m.a_at_5, 0.5, 1e-12));
        // Vocabulary is {a}: annotated twice, correct once.
        assert!(close(m.word_precision, 0.5, 1e-12));
        assert!(close(m.word_recall, 1.0, 1e-12));
        // A perfect prediction scores 1 everywhere.
        let m = evaluate(&[item("a b", "a b"), item("c", "c")]);
        assert_eq!((m.p_at_1, m.r_at_5, m.a_at_5), (1.0, 1.0, 1.0));
        assert_eq!(
            (m.word_precision, m.word_recall, m.word_f1),
            (1.0, 1.0, 1.0)
        );
        assert_eq!((m.bleu1, m.bleu1_seed, m.n_plus), (1.0, 1.0, 3));
    }

    #[test]
    fn metrics_round_trip_through_json() {
        let m = evaluate(&fixture());
        let json = serde_json::to_string(&m).unwrap();
        for field in [
            "p_at_1",
            "r_at_5",
            "a_at_5",
            "word_precision",
            "word_recall",
            "word_f1",
            "n_plus",
            "bleu1",
            "bleu1_seed",
            "images",
        ] {
            assert!(json.contains(&format!("\"{field}\"")), "{field} missing");
        }
        let back: TagMetrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn frequency_prior_ranks_and_breaks_ties() {
        let train = vec![tags("a b"), tags("b c"), tags("c b"), tags("d")];
        // b: 3, c: 2, a: 1, d: 1 -> the a/d tie goes alphabetically.
        assert_eq!(frequency_prior(&train, 3), tags("b c a"));
        assert_eq!(frequency_prior(&train, 10), tags("b c a d"));
        assert!(frequency_prior(&train, 0).is_empty());
        // A tag repeated inside one image counts once.
        let train = vec![tags("x x x"), tags("y"), tags("y")];
        assert_eq!(frequency_prior(&train, 2), tags("y x"));
        // Baseline use: the prior as every image's prediction.
        let prior = frequency_prior(&[tags("a b"), tags("a")], 5);
        let items = vec![(tags("a"), prior.clone()), (tags("b"), prior)];
        let m = evaluate(&items);
        assert!(close(m.p_at_1, 0.5, 1e-12));
        assert!(close(m.a_at_5, 1.0, 1e-12));
    }
}
