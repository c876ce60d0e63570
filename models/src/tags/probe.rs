//! A linear probe: one linear layer over the pooled encoder vector, a score per hashtag.
//!
//! It reads the same merged vocabulary as the decoder it ships with (the real tags of the
//! decoder's [`Vocab`](super::Vocab), in order), so its hashtags line up with the decoder's in the
//! fused list. Trained on cached features (`hashtale train probe`) with either
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

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
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
    /// Free-form provenance (data, epochs, dev figures).
    #[serde(default)]
    pub training: serde_json::Value,
}

/// A trained probe, ready to tag encoded batches.
pub struct LinearProbe {
    pub config: ProbeConfig,
    /// (V, D).
    weight: Tensor,
    /// (D, V), for pooled · Wᵀ and grid · Wᵀ.
    weight_t: Tensor,
    /// (V).
    bias: Tensor,
    /// Short content hash of the weights file (part of the model version).
    pub digest: String,
}

impl LinearProbe {
    /// `weight` (V, D) and `bias` (V), any float dtype; V must match `config.tags`.
    pub fn new(config: ProbeConfig, weight: Tensor, bias: Tensor) -> Result<Self> {
        let weight = weight.to_dtype(DType::F32)?;
        let bias = bias.to_dtype(DType::F32)?;
        let (v, _) = weight.dims2()?;
        if v != config.tags.len() || bias.dims1()? != v {
            return Err(Error::msg(format!(
                "probe: {} tags but a {v}-row layer with {} biases",
                config.tags.len(),
                bias.dims1()?
            )));
        }
        Ok(Self {
            weight_t: weight.t()?.contiguous()?,
            weight,
            bias,
            config,
            digest: "unsaved".into(),
        })
    }

    /// Whether `dir` holds a probe.
    pub fn exists(dir: &Path) -> bool {
        dir.join(PROBE_WEIGHTS).exists() && dir.join(PROBE_CONFIG).exists()
    }

    /// Loads `probe.json` and `probe.safetensors` from a model directory.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join(PROBE_CONFIG);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let config: ProbeConfig = serde_json::from_str(&text)?;
        let w_path = dir.join(PROBE_WEIGHTS);
        let bytes = std::fs::read(&w_path).map_err(|e| Error::io(&w_path, e))?;
        let digest = super::short_digest(&bytes);
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
        let get = |k: &str| {
            tensors
                .get(k)
                .cloned()
                .ok_or_else(|| Error::msg(format!("{}: missing tensor {k}", w_path.display())))
        };
        let mut probe = Self::new(config, get("weight")?, get("bias")?)?;
        probe.digest = digest;
        Ok(probe)
    }

    /// Writes `probe.json` and `probe.safetensors` (f16 when `half`) into `dir`.
    pub fn save(&self, dir: &Path, half: bool) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let dtype = if half { DType::F16 } else { DType::F32 };
        let tensors: HashMap<String, Tensor> = [
            ("weight".to_string(), self.weight.to_dtype(dtype)?),
            ("bias".to_string(), self.bias.to_dtype(dtype)?),
        ]
        .into();
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
        let r = |t: &Tensor| t.to_dtype(DType::F16)?.to_dtype(DType::F32);
        Self::new(self.config.clone(), r(&self.weight)?, r(&self.bias)?)
    }

    /// Logits (B, V) of pooled features (B, D).
    pub fn logits(&self, pooled: &Tensor) -> Result<Tensor> {
        let w = self.weight_t.to_device(pooled.device())?;
        let b = self.bias.to_device(pooled.device())?;
        Ok(pooled.matmul(&w)?.broadcast_add(&b)?)
    }

    /// Scores (B, V): softmax or sigmoid of the logits, as trained.
    pub fn scores(&self, pooled: &Tensor) -> Result<Tensor> {
        let logits = self.logits(pooled)?;
        Ok(match self.config.loss {
            ProbeLoss::Softmax => candle_nn::ops::softmax(&logits, D::Minus1)?,
            ProbeLoss::Bce => candle_nn::ops::sigmoid(&logits)?,
        })
    }

    /// The `max_tags` best hashtags of each image (ties by name), each with its class
    /// activation map over the grid.
    pub fn tag(&self, enc: &Encoded, max_tags: usize) -> Result<Vec<Vec<ScoredTag>>> {
        let scores = self.scores(&enc.pooled)?.to_vec2::<f32>()?;
        let tags = &self.config.tags;
        let mut out = Vec::with_capacity(scores.len());
        for (i, s) in scores.iter().enumerate() {
            let mut order: Vec<usize> = (0..s.len()).collect();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(tags[a].cmp(&tags[b])));
            order.truncate(max_tags);
            if order.is_empty() {
                out.push(vec![]);
                continue;
            }
            let ids: Vec<u32> = order.iter().map(|&c| c as u32).collect();
            let ids = Tensor::new(ids.as_slice(), self.weight_t.device())?;
            let w = self
                .weight_t
                .index_select(&ids, 1)?
                .to_device(enc.grid.device())?;
            // (L, k): each cell's share of each chosen hashtag's logit.
            let cam = enc.grid.get(i)?.matmul(&w)?.to_vec2::<f32>()?;
            out.push(
                order
                    .iter()
                    .enumerate()
                    .map(|(column, &c)| ScoredTag {
                        tag: tags[c].clone(),
                        score: s[c],
                        attention: class_map(&cam, column),
                    })
                    .collect(),
            );
        }
        Ok(out)
    }
}

/// Knobs of probe training.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeTrainConfig {
    pub loss: ProbeLoss,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay (on the standardised layer).
    pub weight_decay: f64,
    /// Epochs without a better dev loss before stopping.
    pub patience: usize,
    pub seed: u64,
}

impl Default for ProbeTrainConfig {
    fn default() -> Self {
        Self {
            loss: ProbeLoss::Softmax,
            epochs: 30,
            batch_size: 256,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            patience: 3,
            seed: 42,
        }
    }
}

/// One epoch of probe training.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeEpoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub dev_loss: f64,
}

/// Pooled features (N, D) with each row's tag ids (into `tags`).
pub struct ProbeData<'a> {
    pub pooled: &'a Tensor,
    pub targets: &'a [Vec<u32>],
}

/// Tag ids of each image's list, tags outside `tags` dropped.
pub fn tag_ids(tags: &[String], lists: &[Vec<String>]) -> Vec<Vec<u32>> {
    let index: HashMap<&str, u32> = tags
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    lists
        .iter()
        .map(|l| {
            let mut ids: Vec<u32> = l
                .iter()
                .filter_map(|t| index.get(t.as_str()).copied())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        })
        .collect()
}

/// Target matrix (B, V) of some rows: the normalised tag distribution (softmax) or the
/// multi-hot vector (bce).
fn target_matrix(
    targets: &[Vec<u32>],
    rows: &[usize],
    vocab: usize,
    loss: ProbeLoss,
    device: &Device,
) -> Result<Tensor> {
    let mut t = vec![0f32; rows.len() * vocab];
    for (r, &i) in rows.iter().enumerate() {
        let ids = &targets[i];
        let v = match loss {
            ProbeLoss::Softmax => 1.0 / ids.len().max(1) as f32,
            ProbeLoss::Bce => 1.0,
        };
        for &id in ids {
            t[r * vocab + id as usize] = v;
        }
    }
    Ok(Tensor::from_vec(t, (rows.len(), vocab), device)?)
}

/// Mean loss per image of logits (B, V) against targets (B, V).
fn loss_of(logits: &Tensor, targets: &Tensor, loss: ProbeLoss) -> Result<Tensor> {
    let b = logits.dim(0)? as f64;
    Ok(match loss {
        ProbeLoss::Softmax => {
            let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
            ((logp * targets)?.sum_all()? / (-b))?
        }
        ProbeLoss::Bce => {
            // max(x, 0) − x·y + log(1 + e^{−|x|}), summed over tags.
            let pos = logits.relu()?;
            let soft = ((logits.abs()?.neg()?.exp()? + 1.0)?).log()?;
            let per = ((pos - (logits * targets)?)? + soft)?;
            (per.sum_all()? / b)?
        }
    })
}

/// Trains a probe over `tags` on `train`, early-stopping on `dev`'s loss (the best epoch is
/// kept). Deterministic: zero initial weights, batches shuffled by a seeded RNG.
pub fn train_probe(
    cfg: &ProbeTrainConfig,
    config: ProbeConfig,
    train: &ProbeData,
    dev: &ProbeData,
    device: &Device,
    mut on_epoch: impl FnMut(&ProbeEpoch, &LinearProbe),
) -> Result<(LinearProbe, Vec<ProbeEpoch>)> {
    let vocab = config.tags.len();
    let x = train.pooled.to_dtype(DType::F32)?.to_device(device)?;
    let (n, d) = x.dims2()?;
    if n == 0 || vocab == 0 {
        return Err(Error::msg("probe: nothing to train on"));
    }
    // Standardise each feature on train (σ floored so dead channels stay finite).
    let mean = x.mean(0)?;
    let centred = x.broadcast_sub(&mean)?;
    let std = (centred.sqr()?.mean(0)? + 1e-4)?.sqrt()?;
    let standardise = |t: &Tensor| -> Result<Tensor> {
        Ok(t.to_dtype(DType::F32)?
            .to_device(device)?
            .broadcast_sub(&mean)?
            .broadcast_div(&std)?)
    };
    let xs = standardise(&x)?;
    let xd = standardise(dev.pooled)?;
    let w = Var::zeros((d, vocab), DType::F32, device)?;
    let b = Var::zeros(vocab, DType::F32, device)?;
    let mut opt = AdamW::new(
        vec![w.clone(), b.clone()],
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: cfg.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let dev_rows: Vec<usize> = (0..dev.targets.len()).collect();
    let dev_t = target_matrix(dev.targets, &dev_rows, vocab, cfg.loss, device)?;
    // The stored layer reads raw features: x·(W/σ) + (b − μ·(W/σ)).
    let fold = |w: &Tensor, b: &Tensor| -> Result<LinearProbe> {
        let w_raw = w.broadcast_div(&std.reshape((d, 1))?)?;
        let shift = mean.reshape((1, d))?.matmul(&w_raw)?.reshape(vocab)?;
        LinearProbe::new(config.clone(), w_raw.t()?.contiguous()?, (b - shift)?)
    };
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut history: Vec<ProbeEpoch> = Vec::new();
    let mut best: Option<(f64, Tensor, Tensor)> = None;
    let mut stale = 0;
    for epoch in 1..=cfg.epochs {
        order.shuffle(&mut rng);
        let (mut total, mut seen) = (0.0, 0usize);
        for chunk in order.chunks(cfg.batch_size.max(1)) {
            let ids: Vec<u32> = chunk.iter().map(|&i| i as u32).collect();
            let ids = Tensor::new(ids.as_slice(), device)?;
            let xb = xs.index_select(&ids, 0)?;
            let tb = target_matrix(train.targets, chunk, vocab, cfg.loss, device)?;
            let logits = xb.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
            let loss = loss_of(&logits, &tb, cfg.loss)?;
            opt.backward_step(&loss)?;
            total += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            seen += chunk.len();
        }
        let dev_logits = xd.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
        let dev_loss = if dev.targets.is_empty() {
            total / seen as f64
        } else {
            loss_of(&dev_logits, &dev_t, cfg.loss)?.to_scalar::<f32>()? as f64
        };
        let stats = ProbeEpoch {
            epoch,
            train_loss: total / seen.max(1) as f64,
            dev_loss,
        };
        on_epoch(&stats, &fold(w.as_tensor(), b.as_tensor())?);
        history.push(stats);
        if best.as_ref().is_none_or(|(l, _, _)| dev_loss < *l) {
            best = Some((dev_loss, w.as_tensor().copy()?, b.as_tensor().copy()?));
            stale = 0;
        } else {
            stale += 1;
            if stale >= cfg.patience {
                break;
            }
        }
    }
    let (_, w_best, b_best) = best.expect("at least one epoch");
    Ok((fold(&w_best, &b_best)?, history))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tags: &[&str], loss: ProbeLoss) -> ProbeConfig {
        ProbeConfig {
            encoder: "test".into(),
            loss,
            tags: tags.iter().map(|t| t.to_string()).collect(),
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

    #[test]
    fn tag_ids_drop_unknown_tags() {
        let tags: Vec<String> = ["dog", "cat"].iter().map(|s| s.to_string()).collect();
        let lists = vec![vec!["cat".to_string(), "zebra".into(), "dog".into()]];
        assert_eq!(tag_ids(&tags, &lists), vec![vec![0, 1]]);
    }
}
