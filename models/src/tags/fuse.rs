//! One ranked list from the taggers: the attention decoder, the concept hashtags and, where the
//! model ships one, the linear probe.
//!
//! Each source's raw score is calibrated by a logistic model fitted on dev sets only
//! (`hashtale tune fusion`): P(relevant) = σ(w₀ + w₁·logit(s) + w₂·logit(c) + w₃·logit(d) +
//! w₄·logit(p)), where `s` is the hashtag's own score and `c`, `d`, `p` the image's top concept,
//! decoder and probe scores (a source that gave no list adds no term). The image-level terms let
//! the fusion learn when the ImageNet head knows the photo (a cup, a cat) and when the decoder or
//! the probe does (people at the beach), which a per-source Platt scaling cannot. A hashtag named
//! by several sources gets the noisy-or of their calibrated scores, and the score-weighted mean
//! of their maps.
//!
//! Where the weights carry a gate (`gate.rs`), one more context term enters every calibration:
//! logit(g), g = P(the ImageNet head's first hashtag is relevant) read from the pooled encoder
//! vector, which tells an object photo from a scene the head has no class for.
use serde::{Deserialize, Serialize};

use super::gate::PhotoGate;
use super::ScoredTag;

/// A logistic calibration of one source's scores.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    pub bias: f64,
    /// Weight of logit(the hashtag's own score).
    pub score: f64,
    /// Weight of logit(the image's top concept score).
    pub concept_top: f64,
    /// Weight of logit(the image's top decoder score).
    pub decoder_top: f64,
    /// Weight of logit(the image's top probe score); 0 in weights fitted without a probe.
    #[serde(default)]
    pub probe_top: f64,
    /// Weight of logit(the gate's score); 0 in weights fitted without a gate.
    #[serde(default)]
    pub object_photo: f64,
}

/// Number of weights of a calibration.
pub const N: usize = 6;

impl Calibration {
    /// The identity map: calibrated = raw.
    pub const IDENTITY: Calibration = Calibration {
        bias: 0.0,
        score: 1.0,
        concept_top: 0.0,
        decoder_top: 0.0,
        probe_top: 0.0,
        object_photo: 0.0,
    };

    /// The weights in [`Features::row`] order.
    pub fn weights(&self) -> [f64; N] {
        [
            self.bias,
            self.score,
            self.concept_top,
            self.decoder_top,
            self.probe_top,
            self.object_photo,
        ]
    }

    /// A calibration from weights in [`Features::row`] order.
    pub fn from_weights(w: [f64; N]) -> Self {
        Self {
            bias: w[0],
            score: w[1],
            concept_top: w[2],
            decoder_top: w[3],
            probe_top: w[4],
            object_photo: w[5],
        }
    }

    pub fn apply(&self, x: &Features) -> f32 {
        let w = self.weights();
        let f = x.row();
        sigmoid((0..N).map(|i| w[i] * f[i]).sum()) as f32
    }
}

/// What a calibration reads about one hashtag: its score and the image's top scores of each
/// source (0 where a source gave no list: that term is left out).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Features {
    pub score: f32,
    pub concept_top: f32,
    pub decoder_top: f32,
    pub probe_top: f32,
    /// The gate's score (0: no gate, the term is left out).
    pub object_photo: f32,
}

/// The image-level part of the features: each source's top score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Context {
    pub concept_top: f32,
    pub decoder_top: f32,
    pub probe_top: f32,
    pub object_photo: f32,
}

impl Context {
    pub fn of(decoder: &[ScoredTag], concepts: &[ScoredTag], probe: &[ScoredTag]) -> Self {
        let top = |l: &[ScoredTag]| l.iter().map(|t| t.score).fold(0.0f32, f32::max);
        Self {
            concept_top: top(concepts),
            decoder_top: top(decoder),
            probe_top: top(probe),
            object_photo: 0.0,
        }
    }

    /// With the gate's score of the image (0: no gate).
    pub fn gated(self, object_photo: f32) -> Self {
        Self {
            object_photo,
            ..self
        }
    }

    /// The features of one hashtag with this score.
    pub fn with(&self, score: f32) -> Features {
        Features {
            score,
            concept_top: self.concept_top,
            decoder_top: self.decoder_top,
            probe_top: self.probe_top,
            object_photo: self.object_photo,
        }
    }
}

impl Features {
    /// What the weights multiply: 1, then the logits of the scores (0 for an absent source).
    pub fn row(&self) -> [f64; N] {
        let present = |x: f32| if x > 0.0 { logit(x as f64) } else { 0.0 };
        [
            1.0,
            logit(self.score as f64),
            present(self.concept_top),
            present(self.decoder_top),
            present(self.probe_top),
            present(self.object_photo),
        ]
    }

    /// The image-level part of the features, from the decoder's and the concept lists:
    /// (concept top, decoder top).
    pub fn context(decoder: &[ScoredTag], concepts: &[ScoredTag]) -> (f32, f32) {
        let c = Context::of(decoder, concepts, &[]);
        (c.concept_top, c.decoder_top)
    }
}

/// The fusion weights: one calibration per source, and where they were fitted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FusionWeights {
    pub decoder: Calibration,
    pub concepts: Calibration,
    /// The linear probe's calibration (absent: weights fitted without a probe, whose list is
    /// then left out of the fusion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Calibration>,
    /// The object-photo gate (absent: weights fitted without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<PhotoGate>,
    /// Free-form provenance (dev sets, sample counts, fit log-loss).
    #[serde(default)]
    pub fitted_on: serde_json::Value,
}

impl Default for FusionWeights {
    fn default() -> Self {
        Self {
            decoder: Calibration::IDENTITY,
            concepts: Calibration::IDENTITY,
            probe: None,
            gate: None,
            fitted_on: serde_json::Value::Null,
        }
    }
}

impl FusionWeights {
    /// The gate's score of each row of a (B, D) pooled tensor; 0 (no term) without a gate.
    pub fn object_photo(&self, pooled: &candle_core::Tensor) -> crate::error::Result<Vec<f32>> {
        match &self.gate {
            Some(g) => g.scores(pooled),
            None => Ok(vec![0.0; pooled.dim(0)?]),
        }
    }
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// The logistic function, as calibrations apply it.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Merges the decoder's and the concept lists: calibrated scores, no duplicates, best first
/// (ties by name), at most `max_tags`. `grid_cells` is the map length given to a hashtag whose
/// source had no map (the baselines without attention): a uniform map.
pub fn fuse(
    decoder: &[ScoredTag],
    concepts: &[ScoredTag],
    weights: &FusionWeights,
    max_tags: usize,
    grid_cells: usize,
) -> Vec<ScoredTag> {
    fuse_with_probe(decoder, concepts, &[], 0.0, weights, max_tags, grid_cells)
}

/// As [`fuse`], with the linear probe's list as a third source (left out when the weights have
/// no probe calibration) and the image's gate score `object_photo` (0 without a gate, see
/// [`FusionWeights::object_photo`]). Any list may be empty.
pub fn fuse_with_probe(
    decoder: &[ScoredTag],
    concepts: &[ScoredTag],
    probe: &[ScoredTag],
    object_photo: f32,
    weights: &FusionWeights,
    max_tags: usize,
    grid_cells: usize,
) -> Vec<ScoredTag> {
    let probe: &[ScoredTag] = if weights.probe.is_some() { probe } else { &[] };
    let context = Context::of(decoder, concepts, probe).gated(object_photo);
    // Per hashtag: the fused tag, and the sum of the calibrated scores its map is weighted by.
    let mut out: Vec<(ScoredTag, f32)> = Vec::new();
    let sources = [
        (decoder, weights.decoder),
        (concepts, weights.concepts),
        (probe, weights.probe.unwrap_or(Calibration::IDENTITY)),
    ];
    for (list, calibration) in sources {
        for t in list {
            let s = calibration.apply(&context.with(t.score));
            let map = if t.attention.is_empty() {
                vec![1.0 / grid_cells as f32; grid_cells]
            } else {
                t.attention.clone()
            };
            match out.iter_mut().find(|(o, _)| o.tag == t.tag) {
                Some((o, mass)) => {
                    if o.attention.len() == map.len() && *mass + s > 0.0 {
                        for (m, v) in o.attention.iter_mut().zip(&map) {
                            *m = (*mass * *m + s * v) / (*mass + s);
                        }
                    }
                    *mass += s;
                    o.score = 1.0 - (1.0 - o.score) * (1.0 - s);
                }
                None => out.push((
                    ScoredTag {
                        tag: t.tag.clone(),
                        score: s,
                        attention: map,
                    },
                    s,
                )),
            }
        }
    }
    let mut out: Vec<ScoredTag> = out.into_iter().map(|(t, _)| t).collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.tag.cmp(&b.tag)));
    out.truncate(max_tags);
    out
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
            decoder: Calibration {
                bias: -0.2,
                score: 0.8,
                concept_top: -0.3,
                decoder_top: 0.1,
                probe_top: 0.0,
                object_photo: 0.0,
            },
            concepts: Calibration {
                bias: 0.1,
                score: 1.2,
                concept_top: 0.2,
                decoder_top: -0.4,
                probe_top: 0.0,
                object_photo: 0.0,
            },
            probe: None,
            gate: None,
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
        let at = |score| Features {
            score,
            concept_top: 0.8,
            decoder_top: 0.6,
            probe_top: 0.0,
            object_photo: 0.0,
        };
        let d = w.decoder.apply(&at(0.6));
        let c = w.concepts.apply(&at(0.8));
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
    fn the_gate_moves_the_lead_between_the_decoder_and_the_concepts() {
        let decoder = vec![tag("man", 0.6, peak(3))];
        let concepts = vec![tag("jersey", 0.6, peak(10))];
        let gated = |object_photo: f64| Calibration {
            object_photo,
            ..Calibration::IDENTITY
        };
        let w = FusionWeights {
            decoder: gated(-1.0),
            concepts: gated(1.0),
            ..FusionWeights::default()
        };
        let first = |g: f32| {
            fuse_with_probe(&decoder, &concepts, &[], g, &w, 10, 49)[0]
                .tag
                .clone()
        };
        assert_eq!(
            first(0.9),
            "jersey",
            "an object photo: the ImageNet head leads"
        );
        assert_eq!(first(0.1), "man", "a scene: the decoder leads");
        // No gate (0): the term is left out and the equal scores tie by name.
        assert_eq!(first(0.0), "jersey");
        let none = fuse_with_probe(&decoder, &concepts, &[], 0.0, &w, 10, 49);
        assert!((none[0].score - none[1].score).abs() < 1e-6);
    }

    #[test]
    fn a_probe_is_a_third_source_merged_without_duplicates() {
        let decoder = vec![tag("dog", 0.6, peak(3)), tag("grass", 0.3, peak(40))];
        let concepts = vec![tag("dog", 0.8, peak(10))];
        let probe = vec![tag("dog", 0.5, peak(20)), tag("ball", 0.2, peak(5))];
        let probe_cal = Calibration {
            bias: 0.3,
            score: 1.1,
            concept_top: -0.2,
            decoder_top: 0.1,
            probe_top: 0.4,
            object_photo: 0.0,
        };
        let mut w = FusionWeights::default();
        // Without a probe calibration its list is left out.
        let two = fuse_with_probe(&decoder, &concepts, &probe, 0.0, &w, 10, 49);
        assert_eq!(two, fuse(&decoder, &concepts, &w, 10, 49));
        w.probe = Some(probe_cal);
        let fused = fuse_with_probe(&decoder, &concepts, &probe, 0.0, &w, 10, 49);
        assert_eq!(
            fused,
            fuse_with_probe(&decoder, &concepts, &probe, 0.0, &w, 10, 49)
        );
        let names: Vec<&str> = fused.iter().map(|t| t.tag.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "dog");
        let ctx = Context::of(&decoder, &concepts, &probe);
        let (d, c, p) = (
            w.decoder.apply(&ctx.with(0.6)),
            w.concepts.apply(&ctx.with(0.8)),
            probe_cal.apply(&ctx.with(0.5)),
        );
        let want = 1.0 - (1.0 - d) * (1.0 - c) * (1.0 - p);
        assert!((fused[0].score - want).abs() < 1e-6);
        // The map is the score-weighted mean of the three peaks.
        let m = &fused[0].attention;
        for (cell, s) in [(3, d), (10, c), (20, p)] {
            assert!((m[cell] - s / (d + c + p)).abs() < 1e-5, "{cell}");
        }
        for t in &fused {
            let sum: f32 = t.attention.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{}: {sum}", t.tag);
        }
        // Old weight files (no probe fields) still read.
        let old = r#"{"decoder":{"bias":0,"score":1,"concept_top":0,"decoder_top":0},
            "concepts":{"bias":0,"score":1,"concept_top":0,"decoder_top":0}}"#;
        let read: FusionWeights = serde_json::from_str(old).unwrap();
        assert_eq!(read, FusionWeights::default());
    }
}
