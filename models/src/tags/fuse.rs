//! One ranked list from two taggers: the attention decoder and the concept hashtags.
//!
//! Each source's raw score is calibrated with Platt scaling, P(relevant) = σ(a·logit(s) + b),
//! fitted on dev sets only (`hashtale tune fusion`). A hashtag named by both sources gets the
//! noisy-or of its two calibrated scores, and the score-weighted mean of its two maps.
use serde::{Deserialize, Serialize};

use super::ScoredTag;

/// Platt scaling of one source's scores.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Platt {
    pub a: f64,
    pub b: f64,
}

impl Platt {
    /// The identity map: calibrated = raw.
    pub const IDENTITY: Platt = Platt { a: 1.0, b: 0.0 };

    pub fn apply(&self, score: f32) -> f32 {
        sigmoid(self.a * logit(score as f64) + self.b) as f32
    }
}

/// The fusion weights: one calibration per source, and where they were fitted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FusionWeights {
    pub decoder: Platt,
    pub concepts: Platt,
    /// Free-form provenance (dev sets, sample counts, fit log-loss).
    #[serde(default)]
    pub fitted_on: serde_json::Value,
}

impl Default for FusionWeights {
    fn default() -> Self {
        Self {
            decoder: Platt::IDENTITY,
            concepts: Platt::IDENTITY,
            fitted_on: serde_json::Value::Null,
        }
    }
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Merges the two lists: calibrated scores, no duplicates, best first (ties by name), at most
/// `max_tags`. `grid_cells` is the map length given to a hashtag whose source had no map (the
/// baselines without attention): a uniform map.
pub fn fuse(
    decoder: &[ScoredTag],
    concepts: &[ScoredTag],
    weights: &FusionWeights,
    max_tags: usize,
    grid_cells: usize,
) -> Vec<ScoredTag> {
    let mut out: Vec<ScoredTag> = Vec::new();
    let sources = [(decoder, weights.decoder), (concepts, weights.concepts)];
    for (list, platt) in sources {
        for t in list {
            let s = platt.apply(t.score);
            let map = if t.attention.is_empty() {
                vec![1.0 / grid_cells as f32; grid_cells]
            } else {
                t.attention.clone()
            };
            match out.iter_mut().find(|o| o.tag == t.tag) {
                Some(o) => {
                    let (s0, s1) = (o.score, s);
                    if o.attention.len() == map.len() && s0 + s1 > 0.0 {
                        for (m, v) in o.attention.iter_mut().zip(&map) {
                            *m = (s0 * *m + s1 * v) / (s0 + s1);
                        }
                    }
                    o.score = 1.0 - (1.0 - s0) * (1.0 - s1);
                }
                None => out.push(ScoredTag {
                    tag: t.tag.clone(),
                    score: s,
                    attention: map,
                }),
            }
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.tag.cmp(&b.tag)));
    out.truncate(max_tags);
    out
}

/// Fits a Platt scaling to (raw score, relevant, sample weight) triples by Newton's method on the
/// weighted log-loss, with a small ridge on `a` and `b` so separable data stays finite.
pub fn fit_platt(samples: &[(f32, bool, f64)]) -> Platt {
    let xs: Vec<(f64, f64, f64)> = samples
        .iter()
        .map(|&(s, y, w)| (logit(s as f64), if y { 1.0 } else { 0.0 }, w))
        .collect();
    let (mut a, mut b) = (1.0f64, 0.0f64);
    let ridge = 1e-3;
    for _ in 0..100 {
        // Gradient and Hessian of Σ w·logloss + ridge/2·((a−1)² + b²).
        let (mut ga, mut gb) = (ridge * (a - 1.0), ridge * b);
        let (mut haa, mut hab, mut hbb) = (ridge, 0.0, ridge);
        for &(x, y, w) in &xs {
            let p = sigmoid(a * x + b);
            let r = w * (p - y);
            ga += r * x;
            gb += r;
            let v = w * p * (1.0 - p);
            haa += v * x * x;
            hab += v * x;
            hbb += v;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-12 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs() + db.abs() < 1e-9 {
            break;
        }
    }
    Platt { a, b }
}

/// Weighted mean log-loss of a calibration (for the fit's provenance).
pub fn log_loss(platt: Platt, samples: &[(f32, bool, f64)]) -> f64 {
    let (mut sum, mut total) = (0.0, 0.0);
    for &(s, y, w) in samples {
        let p = (platt.apply(s) as f64).clamp(1e-9, 1.0 - 1e-9);
        sum -= w * if y { p.ln() } else { (1.0 - p).ln() };
        total += w;
    }
    sum / total.max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(t: &str, score: f32, attention: Vec<f32>) -> ScoredTag {
        ScoredTag {
            tag: t.into(),
            score,
            attention,
        }
    }

    fn peak(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; 49];
        v[i] = 1.0;
        v
    }

    #[test]
    fn fused_list_has_no_duplicates_maps_sum_to_one_and_is_deterministic() {
        let decoder = vec![
            tag("dog", 0.6, peak(3)),
            tag("grass", 0.3, peak(40)),
            tag("ball", 0.1, vec![]),
        ];
        let concepts = vec![
            tag("dog", 0.8, peak(10)),
            tag("goldenretriever", 0.5, peak(10)),
        ];
        let w = FusionWeights {
            decoder: Platt { a: 0.8, b: -0.2 },
            concepts: Platt { a: 1.2, b: 0.1 },
            fitted_on: serde_json::Value::Null,
        };
        let fused = fuse(&decoder, &concepts, &w, 10, 49);
        let again = fuse(&decoder, &concepts, &w, 10, 49);
        assert_eq!(fused, again);
        let names: Vec<&str> = fused.iter().map(|t| t.tag.as_str()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(
            names[0], "dog",
            "named by both sources: noisy-or ranks it first"
        );
        let d = w.decoder.apply(0.6);
        let c = w.concepts.apply(0.8);
        assert!((fused[0].score - (1.0 - (1.0 - d) * (1.0 - c))).abs() < 1e-6);
        // The dog's map mixes both peaks in proportion to the calibrated scores.
        assert!((fused[0].attention[3] - d / (d + c)).abs() < 1e-5);
        assert!((fused[0].attention[10] - c / (d + c)).abs() < 1e-5);
        for t in &fused {
            assert_eq!(t.attention.len(), 49, "{}", t.tag);
            let sum: f32 = t.attention.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{}: {sum}", t.tag);
        }
        for pair in fused.windows(2) {
            assert!(pair[0].score >= pair[1].score);
        }
        assert_eq!(fuse(&decoder, &concepts, &w, 2, 49).len(), 2);
    }

    #[test]
    fn platt_fit_recovers_a_known_calibration() {
        // Labels drawn as Bernoulli(σ(2·logit(s) − 1)) on a fixed grid of scores, in expectation.
        let truth = Platt { a: 2.0, b: -1.0 };
        let mut samples = Vec::new();
        for i in 1..100 {
            let s = i as f32 / 100.0;
            let p = truth.apply(s) as f64;
            samples.push((s, true, p));
            samples.push((s, false, 1.0 - p));
        }
        let fit = fit_platt(&samples);
        assert!(
            (fit.a - 2.0).abs() < 0.02 && (fit.b + 1.0).abs() < 0.02,
            "{fit:?}"
        );
        assert!(log_loss(fit, &samples) <= log_loss(Platt::IDENTITY, &samples));
    }
}
