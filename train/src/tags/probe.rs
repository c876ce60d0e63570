//! Fitting linear probes (see `hashtale_models::tags::probe` for what a probe is and how it
//! tags): one layer by AdamW on standardised features, folded back into a layer over the raw
//! pooled vector; a mixture as one expert per labelled folder plus a router over the folders.
use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use hashtale_models::tags::probe::{LinearProbe, ProbeConfig, ProbeLoss};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

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

/// Each tag's train prior as a bias, smoothed by half an image: its log-odds (bce) or its log
/// share of the tag mass (softmax).
fn prior_bias(
    targets: &[Vec<u32>],
    vocab: usize,
    loss: ProbeLoss,
    device: &Device,
) -> Result<Tensor> {
    let mut counts = vec![0.5f64; vocab];
    for &t in targets.iter().flatten() {
        counts[t as usize] += 1.0;
    }
    let n = targets.len() as f64 + 1.0;
    let total: f64 = counts.iter().sum();
    let bias: Vec<f32> = counts
        .iter()
        .map(|&c| match loss {
            ProbeLoss::Bce => {
                let p = (c / n).min(1.0 - 1e-6);
                (p / (1.0 - p)).ln() as f32
            }
            ProbeLoss::Softmax => (c / total).ln() as f32,
        })
        .collect();
    Ok(Tensor::from_vec(bias, vocab, device)?)
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
    // The bias starts at each tag's train prior (the features are centred, so that is the
    // whole initial score): from zero, Adam's small steps spend tens of epochs pushing
    // hundreds of rare tags down, and that falling loss hides the ranking's.
    let b = Var::from_tensor(&prior_bias(train.targets, vocab, cfg.loss, device)?)?;
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

/// One labelled folder of a mixture: its name (the router's label) and its splits.
pub struct ProbePart<'a> {
    pub name: String,
    pub train: ProbeData<'a>,
    pub dev: ProbeData<'a>,
}

/// How a mixture was trained: each expert's epochs, then the router's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MixtureHistory {
    pub experts: Vec<(String, Vec<ProbeEpoch>)>,
    pub router: Vec<ProbeEpoch>,
}

/// Trains a mixture over `config.tags`: one expert per part (each [`train_probe`] on its own
/// folder over the tags that folder's train split uses, early-stopped on that folder's dev
/// split), then a router (softmax over the parts'
/// names, with `router_cfg`) on every part's train features, labelled by part. `on_epoch` sees
/// each expert's epochs (with the part's name) and then the router's (name `router`).
pub fn train_mixture<'a>(
    cfg: &ProbeTrainConfig,
    router_cfg: &ProbeTrainConfig,
    mut config: ProbeConfig,
    parts: &'a [ProbePart<'a>],
    device: &Device,
    mut on_epoch: impl FnMut(&str, &ProbeEpoch, &LinearProbe),
) -> Result<(LinearProbe, MixtureHistory)> {
    if parts.len() < 2 {
        return Err(Error::msg(
            "probe: a mixture needs two or more labelled folders",
        ));
    }
    let names: Vec<String> = parts.iter().map(|p| p.name.clone()).collect();
    let mut single = config.clone();
    single.experts.clear();
    let mut experts = Vec::with_capacity(parts.len());
    let mut histories = Vec::with_capacity(parts.len());
    for part in parts {
        // Each expert learns only the tags its folder uses: the rest would only be pushed
        // down, and their falling loss would hide the ranking's (early stopping reads it).
        let mut used: Vec<u32> = part.train.targets.iter().flatten().copied().collect();
        used.sort_unstable();
        used.dedup();
        let mut sub = single.clone();
        sub.tags = used
            .iter()
            .map(|&t| config.tags[t as usize].clone())
            .collect();
        let local = |targets: &[Vec<u32>]| -> Vec<Vec<u32>> {
            targets
                .iter()
                .map(|ids| {
                    ids.iter()
                        .filter_map(|t| used.binary_search(t).ok().map(|i| i as u32))
                        .collect()
                })
                .collect()
        };
        let (train_t, dev_t) = (local(part.train.targets), local(part.dev.targets));
        let (probe, history) = train_probe(
            cfg,
            sub,
            &ProbeData {
                pooled: part.train.pooled,
                targets: &train_t,
            },
            &ProbeData {
                pooled: part.dev.pooled,
                targets: &dev_t,
            },
            device,
            |e, p| on_epoch(&part.name, e, p),
        )?;
        experts.push((probe, used));
        histories.push((part.name.clone(), history));
    }
    // The router: which folder's labelling does a photo look like?
    let by_part = |train: bool| -> Result<(Tensor, Vec<Vec<u32>>)> {
        let pick = |p: &'a ProbePart<'a>| if train { &p.train } else { &p.dev };
        let xs: Vec<Tensor> = parts
            .iter()
            .map(|p| pick(p).pooled.to_dtype(DType::F32)?.to_device(device))
            .collect::<std::result::Result<_, _>>()?;
        let labels = parts
            .iter()
            .enumerate()
            .flat_map(|(k, p)| std::iter::repeat_n(vec![k as u32], pick(p).targets.len()))
            .collect();
        Ok((Tensor::cat(&xs, 0)?, labels))
    };
    let (train_x, train_y) = by_part(true)?;
    let (dev_x, dev_y) = by_part(false)?;
    let router_config = ProbeConfig {
        encoder: config.encoder.clone(),
        loss: ProbeLoss::Softmax,
        tags: names.clone(),
        experts: Vec::new(),
        training: serde_json::Value::Null,
    };
    let router_cfg = ProbeTrainConfig {
        loss: ProbeLoss::Softmax,
        ..router_cfg.clone()
    };
    let (router, router_history) = train_probe(
        &router_cfg,
        router_config,
        &ProbeData {
            pooled: &train_x,
            targets: &train_y,
        },
        &ProbeData {
            pooled: &dev_x,
            targets: &dev_y,
        },
        device,
        |e, p| on_epoch("router", e, p),
    )?;
    config.experts = names;
    let probe = LinearProbe::mixture_of_subsets(config, experts, router)?;
    Ok((
        probe,
        MixtureHistory {
            experts: histories,
            router: router_history,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_ids_drop_unknown_tags() {
        let tags: Vec<String> = ["dog", "cat"].iter().map(|s| s.to_string()).collect();
        let lists = vec![vec!["cat".to_string(), "zebra".into(), "dog".into()]];
        assert_eq!(tag_ids(&tags, &lists), vec![vec![0, 1]]);
    }
}
