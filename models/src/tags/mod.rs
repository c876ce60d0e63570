//! Hashtag models: the Show-Attend-Tell decoder of the original work and two baselines
//! (Show-and-Tell, a multi-label classifier), all over the same encoder features.
pub mod attend_tell;
pub mod attention;
pub mod beam;
pub mod concepts;
pub mod decoder;
pub mod fuse;
pub mod gate;
pub mod multilabel;
pub mod probe;
pub mod show_tell;
pub mod vocab;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::encoder::Encoded;
use crate::hash::{digest, DigestWidth};
use crate::{Error, Result};
pub use attend_tell::ShowAttendTell;
pub use beam::{beam_search, BeamOptions, Decoded};
pub use multilabel::MultiLabel;
pub use show_tell::ShowTell;
pub use vocab::Vocab;

pub use hashtale_types::ScoredTag;

/// The fusion weights of a hashtag model: they are tuned for that decoder and its encoder's
/// head, so they live in the model's directory.
pub fn fusion_path(model_dir: &Path) -> PathBuf {
    model_dir.join("fusion.json")
}

/// Which hashtag model.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Show, Attend and Tell: soft attention over the 7×7 grid (the product's model).
    Attention,
    /// Show and Tell: no attention, the image vector starts the LSTM.
    ShowTell,
    /// Independent sigmoid per tag over the pooled vector.
    MultiLabel,
}

/// Layer sizes of a decoder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecoderDims {
    pub vocab: usize,
    pub feature: usize,
    pub embed: usize,
    pub hidden: usize,
    pub attention: usize,
    pub dropout: f32,
}

/// Everything needed to rebuild a trained model, saved as `config.json` beside `model.safetensors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagModelConfig {
    pub kind: ModelKind,
    pub encoder: String,
    pub dims: DecoderDims,
    pub vocab: Vocab,
    /// Longest tag list the decoder was trained on.
    pub max_tags: usize,
    /// Free-form facts about training (data, epochs, dev metrics) for provenance.
    #[serde(default)]
    pub training: serde_json::Value,
}

/// A trained hashtag model of any kind.
pub enum TagNet {
    Attention(ShowAttendTell),
    ShowTell(ShowTell),
    MultiLabel(MultiLabel),
}

impl TagNet {
    pub fn new(kind: ModelKind, dims: &DecoderDims, vb: VarBuilder) -> Result<Self> {
        Ok(match kind {
            ModelKind::Attention => TagNet::Attention(ShowAttendTell::new(dims, vb)?),
            ModelKind::ShowTell => TagNet::ShowTell(ShowTell::new(dims, vb)?),
            ModelKind::MultiLabel => TagNet::MultiLabel(MultiLabel::new(dims, vb)?),
        })
    }
}

/// A loaded hashtag model with its vocabulary.
pub struct TagModel {
    pub config: TagModelConfig,
    pub net: TagNet,
    /// Short content hash of the weights, part of the model version.
    pub weights_digest: String,
}

impl TagModel {
    /// Loads `config.json` and `model.safetensors` (f32 or f16) from `dir`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let mut config: TagModelConfig = serde_json::from_str(&text)?;
        config.vocab.reindex();
        let w_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&w_path).map_err(|e| Error::io(&w_path, e))?;
        let weights_digest = digest(&bytes, DigestWidth::Low48);
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)?;
        let net = TagNet::new(config.kind, &config.dims, vb)?;
        Ok(Self {
            config,
            net,
            weights_digest,
        })
    }

    /// Writes a model directory; `half` stores the weights as f16 (half the size, same tags).
    pub fn save(dir: &Path, config: &TagModelConfig, varmap: &VarMap, half: bool) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let data = varmap.data().lock().expect("varmap lock");
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (name, var) in data.iter() {
            let t = var.as_tensor().clone();
            tensors.insert(name.clone(), if half { t.to_dtype(DType::F16)? } else { t });
        }
        let w_path = dir.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &w_path)?;
        let cfg_path = dir.join("config.json");
        std::fs::write(&cfg_path, serde_json::to_string_pretty(config)?)
            .map_err(|e| Error::io(&cfg_path, e))?;
        Ok(())
    }

    /// `kind-digest` (e.g. `attention-77465e76f1ca`), stored with every result.
    pub fn version(&self) -> String {
        let kind = serde_json::to_value(self.config.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        crate::hash::version(&kind, &self.weights_digest)
    }

    /// Ranked hashtags for each encoded image: beam search for the sequence decoders, the top
    /// sigmoid scores above 0.5 (at least one) for the multi-label baseline.
    pub fn predict(&self, enc: &Encoded, opts: BeamOptions) -> Result<Vec<Prediction>> {
        let vocab = &self.config.vocab;
        match &self.net {
            TagNet::Attention(m) => Ok(decoded_to_predictions(beam_search(m, enc, opts)?, vocab)),
            TagNet::ShowTell(m) => Ok(decoded_to_predictions(beam_search(m, enc, opts)?, vocab)),
            TagNet::MultiLabel(m) => {
                let probs =
                    candle_nn::ops::sigmoid(&m.forward(&enc.pooled, None)?)?.to_vec2::<f32>()?;
                Ok(probs
                    .into_iter()
                    .map(|p| {
                        let ranked = rank_tags(&p, &[]);
                        let n = ranked
                            .iter()
                            .take(opts.max_tags)
                            .take_while(|&&(_, s)| s > 0.5)
                            .count()
                            .max(1);
                        Prediction {
                            tags: ranked[..n]
                                .iter()
                                .map(|&(id, s)| ScoredTag {
                                    tag: vocab.tag(id).to_string(),
                                    score: s,
                                    attention: vec![],
                                })
                                .collect(),
                            next: ranked[n..]
                                .iter()
                                .map(|&(id, _)| vocab.tag(id).to_string())
                                .collect(),
                        }
                    })
                    .collect())
            }
        }
    }
}

/// A model's output for one image: its hashtags, and further tags it would add next, best
/// first (used to fill lists to a fixed length for the per-word evaluation protocol).
#[derive(Debug, Clone)]
pub struct Prediction {
    pub tags: Vec<ScoredTag>,
    pub next: Vec<String>,
}

impl Prediction {
    /// Exactly `n` tag names (when the vocabulary allows): the model's own tags, then the
    /// best of its next-tag distribution.
    pub fn filled(&self, n: usize) -> Vec<String> {
        self.tags
            .iter()
            .map(|t| t.tag.clone())
            .chain(self.next.iter().cloned())
            .take(n)
            .collect()
    }
}

/// Real-tag ids sorted by probability (ties by id), excluding `used`.
fn rank_tags(probs: &[f32], used: &[u32]) -> Vec<(u32, f32)> {
    let mut ranked: Vec<(u32, f32)> = probs
        .iter()
        .enumerate()
        .map(|(i, &p)| (i as u32, p))
        .filter(|(i, _)| !Vocab::is_special(*i) && !used.contains(i))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

fn decoded_to_predictions(decoded: Vec<Decoded>, vocab: &Vocab) -> Vec<Prediction> {
    decoded
        .into_iter()
        .map(|d| {
            let used: Vec<u32> = d.tags.iter().map(|t| t.id).collect();
            Prediction {
                next: rank_tags(&d.last_distribution, &used)
                    .into_iter()
                    .take(16)
                    .map(|(id, _)| vocab.tag(id).to_string())
                    .collect(),
                tags: d
                    .tags
                    .into_iter()
                    .map(|t| ScoredTag {
                        tag: vocab.tag(t.id).to_string(),
                        score: t.prob,
                        attention: t.attention,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Log-softmax over the last dimension (re-exported for training code).
pub fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::log_softmax(x, D::Minus1)
}
