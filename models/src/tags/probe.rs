//! A linear probe: one linear layer over the pooled encoder vector, a score per hashtag.
//!
//! It reads the same merged vocabulary as the decoder it ships with (the real tags of the
//! decoder's [`Vocab`](super::Vocab), in order), so its hashtags line up with the decoder's in the
//! fused list. Trained on cached features (`hashtale train probe`, hashtale-train's
//! `tags::probe`) with either
//! - `softmax`: cross-entropy against each image's tag list as a distribution (each of its n
//!   tags 1/n), scores are the softmax probabilities; or
//! - `bce`: a sigmoid per tag, binary cross-entropy summed over tags, scores are the sigmoids;
//!
//! with AdamW (decoupled weight decay) on standardised features, folded back into the layer at
//! the end, so the stored layer reads the raw pooled vector.
//!
//! Maps: the pooled vector is the mean of the grid cells, so the layer's row for a hashtag dotted
//! with each cell is exactly that cell's share of the hashtag's logit: the class activation map,
//! positive part normalised to sum to 1, as for the concept hashtags.
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::concepts::class_map;
use super::ScoredTag;
use crate::encoder::Encoded;
use crate::{Error, Result};

/// The probe's file names inside a hashtag model directory.
pub const PROBE_WEIGHTS: &str = "probe.safetensors";
pub const PROBE_CONFIG: &str = "probe.json";

/// How the probe turns logits into scores (and which loss trained it).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeLoss {
    /// Softmax over the vocabulary, cross-entropy against the normalised tag list.
    #[default]
    Softmax,
    /// A sigmoid per tag, binary cross-entropy.
    Bce,
}

impl ProbeLoss {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "softmax" => Some(ProbeLoss::Softmax),
            "bce" => Some(ProbeLoss::Bce),
            _ => None,
        }
    }
}

/// `probe.json`: what the weights mean.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeConfig {
    pub encoder: String,
    pub loss: ProbeLoss,
    /// One hashtag per output row.
    pub tags: Vec<String>,
    /// A mixture's experts, one per labelled folder, in the router's order (empty: one layer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub experts: Vec<String>,
    /// Free-form provenance (data, epochs, dev figures).
    #[serde(default)]
    pub training: serde_json::Value,
}

/// One linear layer over the pooled vector.
#[derive(Clone)]
struct Layer {
    /// (V, D).
    weight: Tensor,
    /// (D, V), for pooled · Wᵀ and grid · Wᵀ.
    weight_t: Tensor,
    /// (V).
    bias: Tensor,
    /// The vocabulary rows it was trained on, when fewer than all: the others score
    /// [`UNSEEN_TAG_BIAS`] and are not stored.
    seen: Option<Vec<u32>>,
}

impl Layer {
    /// `weight` (rows, D) and `bias` (rows), any float dtype.
    fn new(weight: Tensor, bias: Tensor, rows: usize, what: &str) -> Result<Self> {
        let weight = weight.to_dtype(DType::F32)?;
        let bias = bias.to_dtype(DType::F32)?;
        let (v, _) = weight.dims2()?;
        if v != rows || bias.dims1()? != v {
            return Err(Error::msg(format!(
                "probe: {what} needs {rows} rows but has a {v}-row layer with {} biases",
                bias.dims1()?
            )));
        }
        Ok(Self {
            weight_t: weight.t()?.contiguous()?,
            weight,
            bias,
            seen: None,
        })
    }

    fn logits(&self, pooled: &Tensor) -> Result<Tensor> {
        let w = self.weight_t.to_device(pooled.device())?;
        let b = self.bias.to_device(pooled.device())?;
        Ok(pooled.matmul(&w)?.broadcast_add(&b)?)
    }

    fn rounded_to_f16(&self) -> Result<Self> {
        let r = |t: &Tensor| t.to_dtype(DType::F16)?.to_dtype(DType::F32);
        let (rows, _) = self.weight.dims2()?;
        let mut layer = Self::new(r(&self.weight)?, r(&self.bias)?, rows, "a rounded layer")?;
        layer.seen = self.seen.clone();
        Ok(layer)
    }

    /// (L, k): each grid cell's share of the logits of the rows `ids`.
    fn cell_shares(&self, grid: &Tensor, ids: &Tensor) -> Result<Vec<Vec<f32>>> {
        let w = self
            .weight_t
            .index_select(&ids.to_device(self.weight_t.device())?, 1)?
            .to_device(grid.device())?;
        Ok(grid.matmul(&w)?.to_vec2::<f32>()?)
    }
}

/// A trained probe, ready to tag encoded batches: one linear layer, or a mixture of one layer
/// per labelled folder with a softmax router over the folders (score = Σ_k π_k · s_k), so that
/// each folder's labelling convention (Corel's `sky` on every landscape, Flickr8k's caption
/// words) is learned by its own expert and the router picks the convention a photo looks like.
pub struct LinearProbe {
    pub config: ProbeConfig,
    experts: Vec<Layer>,
    /// Over `config.experts`, for a mixture.
    router: Option<Layer>,
    /// Short content hash of the weights file (part of the model version).
    pub digest: String,
}

impl LinearProbe {
    /// One layer: `weight` (V, D) and `bias` (V), any float dtype; V must match `config.tags`.
    pub fn new(config: ProbeConfig, weight: Tensor, bias: Tensor) -> Result<Self> {
        if !config.experts.is_empty() {
            return Err(Error::msg("probe: a config with experts needs a mixture"));
        }
        let layer = Layer::new(weight, bias, config.tags.len(), "the layer")?;
        Ok(Self {
            experts: vec![layer],
            router: None,
            config,
            digest: "unsaved".into(),
        })
    }

    /// A mixture: one (weight, bias) per name in `config.experts`, each over all of
    /// `config.tags`, and the router's (weight (K, D), bias (K)).
    pub fn mixture(
        config: ProbeConfig,
        experts: Vec<(Tensor, Tensor)>,
        router: (Tensor, Tensor),
    ) -> Result<Self> {
        let k = config.experts.len();
        if k < 2 || experts.len() != k {
            return Err(Error::msg(format!(
                "probe: a mixture needs two or more experts, one per name ({k} names, {} layers)",
                experts.len()
            )));
        }
        let experts = experts
            .into_iter()
            .zip(&config.experts)
            .map(|((w, b), name)| Layer::new(w, b, config.tags.len(), &format!("expert {name}")))
            .collect::<Result<Vec<_>>>()?;
        let router = Layer::new(router.0, router.1, k, "the router")?;
        Self::from_layers(config, experts, router)
    }

    fn from_layers(config: ProbeConfig, experts: Vec<Layer>, router: Layer) -> Result<Self> {
        if experts.len() != config.experts.len() || experts.len() < 2 {
            return Err(Error::msg(
                "probe: a mixture needs one layer per expert, two or more",
            ));
        }
        Ok(Self {
            experts,
            router: Some(router),
            config,
            digest: "unsaved".into(),
        })
    }

    /// Whether this probe is a mixture of experts.
    pub fn is_mixture(&self) -> bool {
        self.router.is_some()
    }

    /// Whether `dir` holds a probe.
    pub fn exists(dir: &Path) -> bool {
        dir.join(PROBE_WEIGHTS).exists() && dir.join(PROBE_CONFIG).exists()
    }

    /// [`LinearProbe::load`], refusing a probe fitted on another encoder's features (`encoder`
    /// is the encoder's name).
    pub fn load_for(dir: &Path, device: &Device, encoder: &str) -> Result<Self> {
        let p = Self::load(dir, device)?;
        if p.config.encoder != encoder {
            return Err(Error::msg(format!(
                "the probe in {} reads {} features, not {encoder}",
                dir.display(),
                p.config.encoder,
            )));
        }
        Ok(p)
    }

    /// Loads `probe.json` and `probe.safetensors` from a model directory.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join(PROBE_CONFIG);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let config: ProbeConfig = serde_json::from_str(&text)?;
        let w_path = dir.join(PROBE_WEIGHTS);
        let bytes = std::fs::read(&w_path).map_err(|e| Error::io(&w_path, e))?;
        let digest = crate::hash::digest(&bytes, crate::hash::DigestWidth::Low48);
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
        let get = |k: &str| {
            tensors
                .get(k)
                .cloned()
                .ok_or_else(|| Error::msg(format!("{}: missing tensor {k}", w_path.display())))
        };
        let mut probe = if config.experts.is_empty() {
            Self::new(config, get("weight")?, get("bias")?)?
        } else {
            let vocab = config.tags.len();
            let mut experts = Vec::with_capacity(config.experts.len());
            for k in 0..config.experts.len() {
                let (w, b) = (
                    get(&format!("expert.{k}.weight"))?,
                    get(&format!("expert.{k}.bias"))?,
                );
                // Stored over the rows it was trained on, or over all of them.
                let layer = match tensors.get(&format!("expert.{k}.rows")) {
                    None => Layer::new(w, b, vocab, &format!("expert {k}"))?,
                    Some(rows) => {
                        let rows = rows.to_dtype(DType::U32)?.to_vec1::<u32>()?;
                        if rows.iter().any(|&r| r as usize >= vocab) {
                            return Err(Error::msg(format!(
                                "{}: expert {k} names a row past the {vocab} tags",
                                w_path.display()
                            )));
                        }
                        let sub = Layer::new(w, b, rows.len(), &format!("expert {k}"))?;
                        widen(&sub, &rows, vocab)?
                    }
                };
                experts.push(layer);
            }
            let router = Layer::new(
                get("router.weight")?,
                get("router.bias")?,
                config.experts.len(),
                "the router",
            )?;
            Self::from_layers(config, experts, router)?
        };
        probe.digest = digest;
        Ok(probe)
    }

    /// Writes `probe.json` and `probe.safetensors` (f16 when `half`) into `dir`.
    pub fn save(&self, dir: &Path, half: bool) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let dtype = if half { DType::F16 } else { DType::F32 };
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        match &self.router {
            None => {
                tensors.insert("weight".into(), self.experts[0].weight.to_dtype(dtype)?);
                tensors.insert("bias".into(), self.experts[0].bias.to_dtype(dtype)?);
            }
            Some(router) => {
                for (k, e) in self.experts.iter().enumerate() {
                    let (weight, bias) = match &e.seen {
                        None => (e.weight.clone(), e.bias.clone()),
                        Some(rows) => {
                            let ids = Tensor::new(rows.as_slice(), e.weight.device())?;
                            tensors.insert(format!("expert.{k}.rows"), ids.clone());
                            (
                                e.weight.index_select(&ids, 0)?,
                                e.bias.index_select(&ids, 0)?,
                            )
                        }
                    };
                    tensors.insert(format!("expert.{k}.weight"), weight.to_dtype(dtype)?);
                    tensors.insert(format!("expert.{k}.bias"), bias.to_dtype(dtype)?);
                }
                tensors.insert("router.weight".into(), router.weight.to_dtype(dtype)?);
                tensors.insert("router.bias".into(), router.bias.to_dtype(dtype)?);
            }
        }
        candle_core::safetensors::save(&tensors, dir.join(PROBE_WEIGHTS))?;
        let cfg_path = dir.join(PROBE_CONFIG);
        std::fs::write(
            &cfg_path,
            serde_json::to_string_pretty(&self.config)? + "\n",
        )
        .map_err(|e| Error::io(&cfg_path, e))?;
        Ok(())
    }

    /// The same probe with its weights rounded through f16 (what [`LinearProbe::save`] with
    /// `half` stores), for evaluating exactly what ships.
    pub fn rounded_to_f16(&self) -> Result<Self> {
        Ok(Self {
            config: self.config.clone(),
            experts: self
                .experts
                .iter()
                .map(Layer::rounded_to_f16)
                .collect::<Result<_>>()?,
            router: self
                .router
                .as_ref()
                .map(Layer::rounded_to_f16)
                .transpose()?,
            digest: self.digest.clone(),
        })
    }

    /// The router's share of each expert (B, K) for pooled features (B, D); `None` for one layer.
    pub fn routing(&self, pooled: &Tensor) -> Result<Option<Tensor>> {
        self.router
            .as_ref()
            .map(|r| Ok(candle_nn::ops::softmax(&r.logits(pooled)?, D::Minus1)?))
            .transpose()
    }

    /// Each expert's part of the scores, (B, V) each: π_k · s_k (s for one layer); they sum to
    /// [`LinearProbe::scores`].
    fn score_parts(&self, pooled: &Tensor) -> Result<Vec<Tensor>> {
        let activate = |logits: Tensor| -> Result<Tensor> {
            Ok(match self.config.loss {
                ProbeLoss::Softmax => candle_nn::ops::softmax(&logits, D::Minus1)?,
                ProbeLoss::Bce => candle_nn::ops::sigmoid(&logits)?,
            })
        };
        let routing = self.routing(pooled)?;
        self.experts
            .iter()
            .enumerate()
            .map(|(k, e)| {
                let s = activate(e.logits(pooled)?)?;
                Ok(match &routing {
                    None => s,
                    Some(pi) => s.broadcast_mul(&pi.narrow(1, k, 1)?)?,
                })
            })
            .collect()
    }

    /// Scores (B, V): softmax or sigmoid of the logits, as trained (for a mixture, their
    /// router-weighted sum).
    pub fn scores(&self, pooled: &Tensor) -> Result<Tensor> {
        let mut parts = self.score_parts(pooled)?.into_iter();
        let first = parts.next().expect("a probe has a layer");
        parts.try_fold(first, |acc, p| Ok((acc + p)?))
    }

    /// The `max_tags` best hashtags of each image (ties by name), each with its class
    /// activation map over the grid (for a mixture, the experts' maps weighed by their share
    /// of the hashtag's score).
    pub fn tag(&self, enc: &Encoded, max_tags: usize) -> Result<Vec<Vec<ScoredTag>>> {
        let parts: Vec<Vec<Vec<f32>>> = self
            .score_parts(&enc.pooled)?
            .iter()
            .map(|p| p.to_vec2::<f32>())
            .collect::<std::result::Result<_, _>>()?;
        let tags = &self.config.tags;
        let images = parts[0].len();
        let mut out = Vec::with_capacity(images);
        for i in 0..images {
            let s: Vec<f32> = (0..tags.len())
                .map(|c| parts.iter().map(|p| p[i][c]).sum())
                .collect();
            let mut order: Vec<usize> = (0..s.len()).collect();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(tags[a].cmp(&tags[b])));
            order.truncate(max_tags);
            if order.is_empty() {
                out.push(vec![]);
                continue;
            }
            let ids: Vec<u32> = order.iter().map(|&c| c as u32).collect();
            let ids = Tensor::new(ids.as_slice(), enc.grid.device())?;
            let grid = enc.grid.get(i)?;
            let shares: Vec<Vec<Vec<f32>>> = self
                .experts
                .iter()
                .map(|e| e.cell_shares(&grid, &ids))
                .collect::<Result<_>>()?;
            out.push(
                order
                    .iter()
                    .enumerate()
                    .map(|(column, &c)| {
                        let maps: Vec<(f32, Vec<f32>)> = shares
                            .iter()
                            .zip(&parts)
                            .map(|(cam, part)| (part[i][c], class_map(cam, column)))
                            .collect();
                        ScoredTag {
                            tag: tags[c].clone(),
                            score: s[c],
                            attention: blend(&maps),
                        }
                    })
                    .collect(),
            );
        }
        Ok(out)
    }
}

/// The weighted mean of maps that each sum to 1 (equal weights when they are all zero), so it
/// sums to 1 too; one map is returned as it is.
fn blend(maps: &[(f32, Vec<f32>)]) -> Vec<f32> {
    if maps.len() == 1 {
        return maps[0].1.clone();
    }
    let total: f32 = maps.iter().map(|(w, _)| w.max(0.0)).sum();
    let cells = maps[0].1.len();
    let mut out = vec![0f32; cells];
    for (w, map) in maps {
        let share = if total > 0.0 && total.is_finite() {
            w.max(0.0) / total
        } else {
            1.0 / maps.len() as f32
        };
        for (o, v) in out.iter_mut().zip(map) {
            *o += share * v;
        }
    }
    out
}

/// The bias of a tag an expert never saw in training: its score is about 1e-7 (sigmoid) or
/// adds about e⁻¹⁶ of mass (softmax), so it only ranks where nothing else does.
const UNSEEN_TAG_BIAS: f32 = -16.0;

/// A layer over some rows (`rows[i]` is row i's index in the full vocabulary) widened to all
/// `vocab` rows: the others get no weights and [`UNSEEN_TAG_BIAS`].
fn widen(layer: &Layer, rows: &[u32], vocab: usize) -> Result<Layer> {
    let weight = layer.weight.to_vec2::<f32>()?;
    let bias = layer.bias.to_vec1::<f32>()?;
    let d = layer.weight.dim(1)?;
    let mut w = vec![0f32; vocab * d];
    let mut b = vec![UNSEEN_TAG_BIAS; vocab];
    for (i, &r) in rows.iter().enumerate() {
        w[r as usize * d..(r as usize + 1) * d].copy_from_slice(&weight[i]);
        b[r as usize] = bias[i];
    }
    let device = layer.weight.device();
    let mut wide = Layer::new(
        Tensor::from_vec(w, (vocab, d), device)?,
        Tensor::from_vec(b, vocab, device)?,
        vocab,
        "a widened expert",
    )?;
    wide.seen = Some(rows.to_vec());
    Ok(wide)
}

impl LinearProbe {
    /// A mixture of single-layer probes that each score a subset of `config.tags` (`rows[i]`:
    /// the index in `config.tags` of the expert's row i; the other rows score
    /// [`UNSEEN_TAG_BIAS`]) and a single-layer router over `config.experts`, in that order.
    pub fn mixture_of_subsets(
        config: ProbeConfig,
        experts: Vec<(LinearProbe, Vec<u32>)>,
        router: LinearProbe,
    ) -> Result<Self> {
        let single = |mut p: LinearProbe| -> Result<Layer> {
            if p.is_mixture() || p.experts.len() != 1 {
                return Err(Error::msg(
                    "probe: a mixture is made of single-layer probes",
                ));
            }
            Ok(p.experts.remove(0))
        };
        let vocab = config.tags.len();
        let experts = experts
            .into_iter()
            .map(|(p, rows)| widen(&single(p)?, &rows, vocab))
            .collect::<Result<Vec<_>>>()?;
        let router = single(router)?;
        Self::from_layers(config, experts, router)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tags: &[&str], loss: ProbeLoss) -> ProbeConfig {
        ProbeConfig {
            encoder: "test".into(),
            loss,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            experts: Vec::new(),
            training: serde_json::Value::Null,
        }
    }

    #[test]
    fn maps_are_the_class_activation_of_each_cell() {
        // Two tags over 2-d cells: tag 0 reads feature 0, tag 1 feature 1.
        let w = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[0f32, 0.0], &Device::Cpu).unwrap();
        let p = LinearProbe::new(config(&["a", "b"], ProbeLoss::Softmax), w, b).unwrap();
        // Four cells: feature 0 lives in cell 0, feature 1 in cells 2 and 3.
        let grid = Tensor::new(
            &[[[4f32, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 1.0]]],
            &Device::Cpu,
        )
        .unwrap();
        let enc = Encoded {
            pooled: grid.mean(1).unwrap(),
            grid,
        };
        let tags = p.tag(&enc, 2).unwrap();
        assert_eq!(tags[0][0].tag, "a");
        assert_eq!(tags[0][0].attention, vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(tags[0][1].attention, vec![0.0, 0.0, 0.5, 0.5]);
        let sum: f32 = tags[0].iter().map(|t| t.score).sum();
        assert!((sum - 1.0).abs() < 1e-6, "softmax over two tags");
    }
}
