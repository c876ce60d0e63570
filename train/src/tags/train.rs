//! Training the hashtag models on cached encoder features.
//!
//! Sequence decoders minimise −log P(y|x) per target token plus Xu et al.'s doubly stochastic
//! attention penalty λ Σ_i (1 − Σ_t α_ti)²; the multi-label baseline minimises binary
//! cross-entropy per tag. Adam (AdamW with weight decay 0), gradient-norm clipping, early
//! stopping on dev loss, and a fixed seed: weights are initialised and dropout masks drawn from
//! our own seeded RNG, because candle's CPU RNG cannot be seeded.
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use hashtale_models::encoder::Encoded;
use hashtale_models::nn;
use hashtale_models::nn::dropout::DropDraw;
use hashtale_models::nn::init::reinit_in_name_order;
use hashtale_models::tags::decoder::StepDecoder;
use hashtale_models::tags::vocab::{Vocab, PAD};
use hashtale_models::tags::{
    log_softmax, DecoderDims, ModelKind, TagModel, TagModelConfig, TagNet,
};

use super::features::FeatureSet;
use crate::Result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub kind: ModelKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// λ of the attention penalty (attention decoder only).
    pub attention_penalty: f64,
    /// Gradient-norm clipping threshold.
    pub clip_norm: f64,
    /// Epochs without a better dev loss before stopping.
    pub patience: usize,
    pub seed: u64,
    pub embed: usize,
    pub hidden: usize,
    pub attention: usize,
    pub dropout: f32,
    pub max_tags: usize,
}

impl Default for TrainConfig {
    /// The seed's sizes: embedding 256, 512 LSTM units.
    fn default() -> Self {
        Self {
            kind: ModelKind::Attention,
            epochs: 20,
            batch_size: 64,
            learning_rate: 4e-4,
            attention_penalty: 1.0,
            clip_norm: 5.0,
            patience: 3,
            seed: 42,
            embed: 256,
            hidden: 512,
            attention: 512,
            dropout: 0.5,
            max_tags: 10,
        }
    }
}

/// Rows of a [`FeatureSet`] with their ground-truth tags.
pub struct Split<'a> {
    pub features: &'a FeatureSet,
    pub rows: Vec<u32>,
    pub tags: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f64,
    pub dev_loss: f64,
    pub seconds: f64,
}

pub struct Trained {
    pub varmap: VarMap,
    pub config: TagModelConfig,
    pub history: Vec<EpochStats>,
}

impl Trained {
    /// The trained weights as a ready model (best dev epoch).
    pub fn into_model(self, device: &Device) -> Result<TagModel> {
        let vb = VarBuilder::from_varmap(&self.varmap, DType::F32, device);
        let net = TagNet::new(self.config.kind, &self.config.dims, vb)?;
        Ok(TagModel {
            config: self.config,
            net,
            weights_digest: String::from("unsaved"),
        })
    }
}

/// Re-initialises every variable from `rng`, in name order: uniform ±1/√fan_in for matrices,
/// N(0, 1)-like uniform ±√3 for embeddings, zero for biases.
fn seeded_init(varmap: &VarMap, rng: &mut StdRng) -> Result<()> {
    reinit_in_name_order(varmap, |name, dims| {
        let n: usize = dims.iter().product();
        let bound = if dims.len() < 2 {
            0.0
        } else if name.ends_with("embedding.weight") {
            3f32.sqrt()
        } else {
            1.0 / (dims[1] as f32).sqrt()
        };
        (0..n)
            .map(|_| rng.gen_range(-1.0f32..=1.0) * bound)
            .collect()
    })
}

/// A scaled keep-mask for inverted dropout, drawn as the decoders were first trained with.
fn dropout_mask(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    p: f32,
    device: &Device,
) -> Result<Tensor> {
    nn::dropout::dropout_mask(rng, rows, cols, p, DropDraw::Above, device)
}

/// Padded decoder inputs, targets and mask for a batch: each (B, T).
pub fn batch_targets(
    vocab: &Vocab,
    tags: &[&Vec<String>],
    max_tags: usize,
    device: &Device,
) -> Result<(Tensor, Tensor, Tensor)> {
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = tags
        .iter()
        .map(|t| vocab.encode_targets(t, max_tags))
        .collect();
    let t = pairs.iter().map(|(i, _)| i.len()).max().unwrap_or(1);
    let b = pairs.len();
    let mut input = vec![PAD; b * t];
    let mut target = vec![PAD; b * t];
    let mut mask = vec![0f32; b * t];
    for (r, (i, o)) in pairs.iter().enumerate() {
        for s in 0..i.len() {
            input[r * t + s] = i[s];
            target[r * t + s] = o[s];
            mask[r * t + s] = 1.0;
        }
    }
    Ok((
        Tensor::from_vec(input, (b, t), device)?,
        Tensor::from_vec(target, (b, t), device)?,
        Tensor::from_vec(mask, (b, t), device)?,
    ))
}

/// Loss of a sequence decoder on one batch: mean token NLL + λ · mean_b Σ_i (1 − Σ_t α_ti)².
/// Returns (loss, NLL summed over tokens, token count).
pub fn sequence_loss<M: StepDecoder>(
    model: &M,
    enc: &Encoded,
    (input, target, mask): (&Tensor, &Tensor, &Tensor),
    attention_penalty: f64,
    mut dropout: Option<(&mut StdRng, f32, usize)>,
) -> Result<(Tensor, f64, f64)> {
    let (b, t) = input.dims2()?;
    let mut state = model.init_state(enc)?;
    let mut nll_sum: Option<Tensor> = None;
    let mut alpha_sum: Option<Tensor> = None;
    for s in 0..t {
        let mask_s = mask.narrow(1, s, 1)?; // (B, 1)
        let drop = match dropout.as_mut() {
            Some((rng, p, hidden)) => Some(dropout_mask(rng, b, *hidden, *p, input.device())?),
            None => None,
        };
        let out = model.step(&state, &input.narrow(1, s, 1)?.squeeze(1)?, drop.as_ref())?;
        let logp = log_softmax(&out.logits)?;
        let picked = logp.gather(&target.narrow(1, s, 1)?.contiguous()?, 1)?; // (B, 1)
        let nll = (picked.neg()? * &mask_s)?.sum_all()?;
        nll_sum = Some(match nll_sum {
            None => nll,
            Some(acc) => (acc + nll)?,
        });
        if let Some(alpha) = out.alpha {
            let a = alpha.broadcast_mul(&mask_s)?;
            alpha_sum = Some(match alpha_sum {
                None => a,
                Some(acc) => (acc + a)?,
            });
        }
        state = out.state;
    }
    let tokens = mask.sum_all()?.to_scalar::<f32>()? as f64;
    let nll_sum = nll_sum.expect("at least one step");
    let nll_value = nll_sum.to_scalar::<f32>()? as f64;
    let mut loss = (nll_sum / tokens.max(1.0))?;
    if let (Some(a), true) = (alpha_sum, attention_penalty > 0.0) {
        let penalty = (1.0 - a)?.sqr()?.sum(1)?.mean_all()?;
        loss = (loss + (penalty * attention_penalty)?)?;
    }
    Ok((loss, nll_value, tokens))
}

/// Multi-hot targets (B, V) for the multi-label baseline.
fn multi_hot(vocab: &Vocab, tags: &[&Vec<String>], device: &Device) -> Result<Tensor> {
    let v = vocab.len();
    let mut data = vec![0f32; tags.len() * v];
    for (r, t) in tags.iter().enumerate() {
        for tag in t.iter() {
            if let Some(id) = vocab.id(tag) {
                data[r * v + id as usize] = 1.0;
            }
        }
    }
    Ok(Tensor::from_vec(data, (tags.len(), v), device)?)
}

/// Loss of any model on one batch; (loss, summed loss for reporting, count).
pub fn batch_loss(
    net: &TagNet,
    vocab: &Vocab,
    cfg: &TrainConfig,
    enc: &Encoded,
    tags: &[&Vec<String>],
    dropout_rng: Option<&mut StdRng>,
) -> Result<(Tensor, f64, f64)> {
    let device = enc.pooled.device();
    let dropout = dropout_rng
        .map(|rng| (rng, cfg.dropout, cfg.hidden))
        .filter(|d| d.1 > 0.0);
    match net {
        TagNet::Attention(m) => {
            let (i, t, k) = batch_targets(vocab, tags, cfg.max_tags, device)?;
            sequence_loss(m, enc, (&i, &t, &k), cfg.attention_penalty, dropout)
        }
        TagNet::ShowTell(m) => {
            let (i, t, k) = batch_targets(vocab, tags, cfg.max_tags, device)?;
            sequence_loss(m, enc, (&i, &t, &k), 0.0, dropout)
        }
        TagNet::MultiLabel(m) => {
            let mask = match dropout {
                Some((rng, p, hidden)) => Some(dropout_mask(rng, tags.len(), hidden, p, device)?),
                None => None,
            };
            let logits = m.forward(&enc.pooled, mask.as_ref())?;
            let loss = candle_nn::loss::binary_cross_entropy_with_logit(
                &logits,
                &multi_hot(vocab, tags, device)?,
            )?;
            let value = loss.to_scalar::<f32>()? as f64;
            Ok((loss, value * tags.len() as f64, tags.len() as f64))
        }
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm`; returns the norm before.
fn clip_gradients(
    grads: &mut candle_core::backprop::GradStore,
    vars: &[Var],
    max_norm: f64,
) -> Result<f64> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = total.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let g = (g * scale)?;
                grads.insert(v.as_tensor(), g);
            }
        }
    }
    Ok(norm)
}

/// Prints above the progress bar, or as a log line when the bar is hidden (not a terminal, e.g.
/// a background run writing to a file).
fn report(pb: &ProgressBar, msg: String) {
    if pb.is_hidden() {
        tracing::info!("{msg}");
    } else {
        pb.println(msg);
    }
}

fn snapshot(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap.data().lock().expect("varmap lock");
    data.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect()
}

fn restore(varmap: &VarMap, saved: &HashMap<String, Tensor>) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    for (k, v) in data.iter() {
        v.set(&saved[k])?;
    }
    Ok(())
}

/// Mean loss over a split (no dropout, no gradients kept).
pub fn evaluate_loss(
    net: &TagNet,
    vocab: &Vocab,
    cfg: &TrainConfig,
    split: &Split,
    device: &Device,
) -> Result<f64> {
    let mut sum = 0.0;
    let mut count = 0.0;
    for (rows, tags) in split
        .rows
        .chunks(cfg.batch_size)
        .zip(split.tags.chunks(cfg.batch_size))
    {
        let enc = split.features.batch(rows, device)?;
        let refs: Vec<&Vec<String>> = tags.iter().collect();
        let (_, s, c) = batch_loss(net, vocab, cfg, &enc, &refs, None)?;
        sum += s;
        count += c;
    }
    Ok(sum / count.max(1.0))
}

/// Trains a model; with `checkpoint_dir`, the best model so far is written there after each
/// improving epoch (f32), so an interrupted run keeps its progress.
pub fn train(
    cfg: &TrainConfig,
    vocab: &Vocab,
    train: &Split,
    dev: &Split,
    device: &Device,
    show_progress: bool,
    checkpoint_dir: Option<&Path>,
) -> Result<Trained> {
    let feature_dim = train.features.pooled.dim(1)?;
    let dims = DecoderDims {
        vocab: vocab.len(),
        feature: feature_dim,
        embed: cfg.embed,
        hidden: cfg.hidden,
        attention: cfg.attention,
        dropout: cfg.dropout,
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let net = TagNet::new(cfg.kind, &dims, vb)?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    seeded_init(&varmap, &mut rng)?;
    let vars = varmap.all_vars();
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut config = TagModelConfig {
        kind: cfg.kind,
        encoder: "efficientnet-lite0".into(),
        dims,
        vocab: vocab.clone(),
        max_tags: cfg.max_tags,
        training: serde_json::json!({ "config": cfg }),
    };
    let steps_per_epoch = train.rows.len().div_ceil(cfg.batch_size);
    let pb = if show_progress {
        let pb = ProgressBar::new((steps_per_epoch * cfg.epochs) as u64);
        pb.set_style(
            ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {msg} eta {eta}")
                .expect("static template"),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let mut best: Option<(f64, HashMap<String, Tensor>)> = None;
    let mut history = Vec::new();
    let mut since_best = 0;
    let mut order: Vec<usize> = (0..train.rows.len()).collect();
    for epoch in 1..=cfg.epochs {
        let started = std::time::Instant::now();
        order.shuffle(&mut rng);
        pb.set_prefix(format!("epoch {epoch}/{}", cfg.epochs));
        let (mut sum, mut count) = (0.0, 0.0);
        for chunk in order.chunks(cfg.batch_size) {
            let rows: Vec<u32> = chunk.iter().map(|&i| train.rows[i]).collect();
            let tags: Vec<&Vec<String>> = chunk.iter().map(|&i| &train.tags[i]).collect();
            let enc = train.features.batch(&rows, device)?;
            let (loss, s, c) = batch_loss(&net, vocab, cfg, &enc, &tags, Some(&mut rng))?;
            let mut grads = loss.backward()?;
            clip_gradients(&mut grads, &vars, cfg.clip_norm)?;
            opt.step(&grads)?;
            sum += s;
            count += c;
            pb.set_message(format!("loss {:.4}", sum / count.max(1.0)));
            pb.inc(1);
        }
        let dev_loss = evaluate_loss(&net, vocab, cfg, dev, device)?;
        let stats = EpochStats {
            epoch,
            train_loss: sum / count.max(1.0),
            dev_loss,
            seconds: started.elapsed().as_secs_f64(),
        };
        report(
            &pb,
            format!(
                "epoch {epoch}: train loss {:.4}, dev loss {:.4} ({:.0}s)",
                stats.train_loss, stats.dev_loss, stats.seconds
            ),
        );
        history.push(stats);
        if best.as_ref().is_none_or(|(b, _)| dev_loss < *b) {
            best = Some((dev_loss, snapshot(&varmap)?));
            since_best = 0;
            if let Some(dir) = checkpoint_dir {
                config.training = serde_json::json!({ "config": cfg, "history": history });
                TagModel::save(dir, &config, &varmap, false)?;
            }
        } else {
            since_best += 1;
            if since_best >= cfg.patience {
                report(
                    &pb,
                    format!("early stop: no dev improvement for {} epochs", cfg.patience),
                );
                break;
            }
        }
    }
    pb.finish_and_clear();
    if let Some((_, saved)) = &best {
        restore(&varmap, saved)?;
    }
    config.training = serde_json::json!({ "config": cfg, "history": history });
    Ok(Trained {
        varmap,
        config,
        history,
    })
}
