//! `hashtale eval tags`: the hashtag lists of a tagger (or the frequency prior) on a split, and
//! their metrics.
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::Device;
use hashtale_models::encoder::{EfficientNetLite, ImageEncoder};
use hashtale_models::tags::fuse::{fuse_with_probe, FusionWeights};
use hashtale_models::{Error, Result};

use super::features::FeatureSet;
use super::taggers::{names, Taggers};
use crate::metrics::{bleu1, bleu1_seed, evaluate, frequency_prior, TagMetrics, TOP_K};

/// Which tagger's list is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Decoder,
    Concepts,
    Probe,
    /// Decoder, concept hashtags and the probe, fused.
    Fused,
}

impl Source {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "decoder" => Source::Decoder,
            "concepts" => Source::Concepts,
            "probe" => Source::Probe,
            "fused" => Source::Fused,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Source::Decoder => "decoder",
            Source::Concepts => "concepts",
            Source::Probe => "probe",
            Source::Fused => "fused",
        }
    }
}

/// Per image: the list as emitted and the list scored at 5 (the decoder's filled from its
/// next-tag distribution).
#[derive(Debug, Clone, Default)]
pub struct Lists {
    pub own: Vec<Vec<String>>,
    pub filled: Vec<Vec<String>>,
}

/// The train split's most frequent tags, for each of `images` images.
pub fn prior_lists(train: &[Vec<String>], images: usize) -> Lists {
    let prior = frequency_prior(train, TOP_K);
    let own = vec![prior; images];
    Lists {
        filled: own.clone(),
        own,
    }
}

/// Reads fusion weights (`fusion.json`).
pub fn read_fusion(path: &Path) -> Result<FusionWeights> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Settings of [`tagger_lists`].
#[derive(Debug, Clone)]
pub struct TaggerEval {
    pub source: Source,
    /// The weights of [`Source::Fused`] (and of the gate score written per image).
    pub fusion: FusionWeights,
    /// Where to write each image's ground truth and scored lists as JSON lines.
    pub per_image: Option<PathBuf>,
}

/// The lists of `o.source` on the images `rows` of `features`, whose ground truth is `gt`.
pub fn tagger_lists(
    taggers: &Taggers,
    features: &FeatureSet,
    rows: &[u32],
    gt: &[Vec<String>],
    o: &TaggerEval,
    device: &Device,
) -> Result<Lists> {
    let cells = features.grid.dim(1)?;
    let mut outputs = taggers.run(features, rows, device)?;
    if let Some(gate) = &o.fusion.gate {
        for out in &mut outputs {
            out.object_photo = gate.score(&out.pooled);
        }
    }
    if let Some(path) = &o.per_image {
        let text: String = outputs
            .iter()
            .zip(gt)
            .map(|(out, truth)| format!("{}\n", out.per_image_json(truth)))
            .collect();
        std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
    }
    let mut lists = Lists::default();
    for out in outputs {
        let list = match o.source {
            Source::Decoder => {
                lists.own.push(names(&out.decoder));
                lists.filled.push(out.fill);
                continue;
            }
            Source::Concepts => out.concepts,
            Source::Probe => out.probe,
            Source::Fused => fuse_with_probe(
                &out.decoder,
                &out.concepts,
                &out.probe,
                out.object_photo,
                &o.fusion,
                taggers.beam.max_tags,
                cells,
            ),
        };
        lists.own.push(names(&list));
        lists
            .filled
            .push(names(&list).into_iter().take(TOP_K).collect());
    }
    Ok(lists)
}

/// How the report names the taggers, e.g. "decoder on lite0 with tags-… + probe-…".
pub fn tagger_label(taggers: &Taggers, source: Source, encoder: &EfficientNetLite) -> String {
    let mut model = taggers
        .model
        .as_ref()
        .map(|m| format!(" with {}", m.version()))
        .unwrap_or_default();
    if let Some(p) = &taggers.probe {
        model.push_str(&format!(" + probe-{}", p.digest));
    }
    format!("{} on {}{model}", source.name(), encoder.name())
}

/// What `eval tags` reports; its JSON form is the metrics alone.
#[derive(Debug, Clone)]
pub struct TagEvalReport {
    pub label: String,
    /// The dataset folder.
    pub data: String,
    pub split: String,
    pub metrics: TagMetrics,
    /// Mean length of the lists as emitted.
    pub mean_tags: f64,
}

/// The metrics of `lists` against `gt`.
pub fn score(
    label: String,
    data: String,
    split: String,
    gt: &[Vec<String>],
    lists: Lists,
) -> TagEvalReport {
    let Lists { own, filled } = lists;
    let items: Vec<(Vec<String>, Vec<String>)> = gt.iter().cloned().zip(filled).collect();
    let mut m = evaluate(&items);
    // BLEU-1 compares the model's own list (not the filled one) with the ground truth.
    let n = gt.len().max(1) as f64;
    m.bleu1 = gt.iter().zip(&own).map(|(g, p)| bleu1(p, g)).sum::<f64>() / n;
    m.bleu1_seed = gt
        .iter()
        .zip(&own)
        .map(|(g, p)| bleu1_seed(g, p))
        .sum::<f64>()
        / n;
    TagEvalReport {
        label,
        data,
        split,
        metrics: m,
        mean_tags: own.iter().map(Vec::len).sum::<usize>() as f64 / n,
    }
}

impl fmt::Display for TagEvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.metrics;
        writeln!(
            f,
            "{} on {} [{}]: {} images",
            self.label, self.data, self.split, m.images
        )?;
        writeln!(
            f,
            "  P@1 {:.4}  R@5 {:.4}  A@5 {:.4}",
            m.p_at_1, m.r_at_5, m.a_at_5
        )?;
        writeln!(
            f,
            "  per-word (5 tags/image) P {:.4}  R {:.4}  F1 {:.4}  N+ {}",
            m.word_precision, m.word_recall, m.word_f1, m.n_plus
        )?;
        writeln!(
            f,
            "  BLEU-1 {:.4}  BLEU-1 (seed deck) {:.4}",
            m.bleu1, m.bleu1_seed
        )?;
        writeln!(f, "  mean tags emitted {:.2}; decoder lists shorter than 5 filled from its next-tag distribution", self.mean_tags)
    }
}
