//! Evaluation of the expansion on held-out HARRISON posts.
//!
//! Split: post `i` (0-based line of `tag_list.txt`) is held out when `i % 10 == 9`, i.e.
//! exactly every tenth post. HARRISON's lists are grouped by search category (`sea`,
//! `food`, …), so this fixed rule samples 10% of every category evenly, with no seed to
//! record. Statistics are counted on the other 90%.
//!
//! Protocol: for each held-out post with at least 2 hashtags, each of its hashtags in turn
//! is given alone (weight 1) and 5 others are asked for; recall@5 = hits / the post's other
//! hashtags, precision@5 = hits / 5, averaged over queries. The "first tag" variant asks
//! once per post with the first listed hashtag. The popularity prior answers the 5 most
//! common training hashtags other than the query.
use serde::{Deserialize, Serialize};

use hashtale_models::expand::{CooccurrenceStats, Expander, SuggestOptions};

/// Posts whose index satisfies `i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1` are held out.
pub const HOLDOUT_EVERY: usize = 10;

/// Whether post `i` belongs to the held-out 10%.
pub fn is_held_out(i: usize) -> bool {
    i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
}

/// Splits posts into (training, held-out) by [`is_held_out`].
pub fn split<T>(posts: &[T]) -> (Vec<&T>, Vec<&T>) {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (i, p) in posts.iter().enumerate() {
        if is_held_out(i) {
            test.push(p);
        } else {
            train.push(p);
        }
    }
    (train, test)
}

/// Mean recall@k and precision@k over a set of queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub queries: usize,
    pub recall: f64,
    pub precision: f64,
}

#[derive(Default)]
struct Acc {
    n: usize,
    recall: f64,
    precision: f64,
}

impl Acc {
    fn add(&mut self, predicted: &[String], targets: &[&String], k: usize) {
        let hits = predicted
            .iter()
            .take(k)
            .filter(|p| targets.contains(p))
            .count() as f64;
        self.n += 1;
        self.recall += hits / targets.len() as f64;
        self.precision += hits / k as f64;
    }
    fn finish(&self) -> Metrics {
        let n = self.n.max(1) as f64;
        Metrics {
            queries: self.n,
            recall: self.recall / n,
            precision: self.precision / n,
        }
    }
}

/// Results of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub k: usize,
    pub alpha: f64,
    pub min_pair_count: u64,
    pub posts: usize,
    pub train_posts: usize,
    pub heldout_posts: usize,
    /// Held-out posts with at least 2 hashtags.
    pub eligible_posts: usize,
    /// Every hashtag of every eligible post in turn.
    pub model: Metrics,
    pub prior: Metrics,
    /// One query per eligible post: its first listed hashtag.
    pub model_first_tag: Metrics,
    pub prior_first_tag: Metrics,
}

/// Counts statistics on the training split and scores the model and the popularity prior
/// on the held-out posts (see the module docs).
/// Training pairs seen in fewer than `min_pair_count` posts are dropped first, as in the
/// shipped file.
pub fn evaluate(posts: &[Vec<String>], k: usize, alpha: f64, min_pair_count: u64) -> EvalReport {
    let (train, test) = split(posts);
    let mut stats = CooccurrenceStats::from_posts(train.iter().map(|p| p.as_slice()));
    stats.prune(min_pair_count);
    let train_posts = train.len();
    let popular: Vec<String> = stats
        .most_common(k + 1)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let expander = Expander::new(stats).with_alpha(alpha);
    let opts = SuggestOptions {
        max_total: usize::MAX,
        max_suggestions: Some(k),
        ..SuggestOptions::default()
    };
    let (mut model, mut prior, mut model_first, mut prior_first) = (
        Acc::default(),
        Acc::default(),
        Acc::default(),
        Acc::default(),
    );
    let mut eligible = 0;
    for post in test.iter().filter(|p| p.len() >= 2) {
        eligible += 1;
        for (q, query) in post.iter().enumerate() {
            let targets: Vec<&String> = post.iter().filter(|t| *t != query).collect();
            let predicted: Vec<String> = expander
                .suggest(&[(query.clone(), 1.0)], &opts)
                .into_iter()
                .map(|s| s.tag)
                .collect();
            let baseline: Vec<String> = popular
                .iter()
                .filter(|t| *t != query)
                .take(k)
                .cloned()
                .collect();
            model.add(&predicted, &targets, k);
            prior.add(&baseline, &targets, k);
            if q == 0 {
                model_first.add(&predicted, &targets, k);
                prior_first.add(&baseline, &targets, k);
            }
        }
    }
    EvalReport {
        k,
        alpha,
        min_pair_count,
        posts: posts.len(),
        train_posts,
        heldout_posts: test.len(),
        eligible_posts: eligible,
        model: model.finish(),
        prior: prior.finish(),
        model_first_tag: model_first.finish(),
        prior_first_tag: prior_first.finish(),
    }
}
