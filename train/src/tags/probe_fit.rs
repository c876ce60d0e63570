//! `hashtale train probe`: fitting the linear probe (or a mixture of per-folder experts) on
//! several folders' pooled features, with its dev figures per epoch and per folder.
use candle_core::{Device, Tensor};
use hashtale_models::tags::probe::{LinearProbe, ProbeConfig};
use hashtale_models::{Error, Result};

use super::features::FeatureSet;
use super::probe::{
    tag_ids, train_mixture, train_probe, ProbeData, ProbeEpoch, ProbePart, ProbeTrainConfig,
};
use crate::metrics::{evaluate, TOP_K};

/// (P@1, R@5) over every folder's dev images, then per folder.
type MergedAndPerFolder = ((f64, f64), Vec<(f64, f64)>);

/// One `--data` folder's pooled features and tag ids, per split.
pub struct FolderFeatures {
    pub name: String,
    pub train_x: Tensor,
    pub train_t: Vec<Vec<u32>>,
    pub dev_x: Tensor,
    pub dev_t: Vec<Vec<u32>>,
    pub dev_truth: Vec<Vec<String>>,
}

/// P@1 and R@5 of the ranking that `scores` (B, V) give over `tags`, against `truth`.
pub fn ranked_figures(scores: &[Vec<f32>], tags: &[String], truth: &[Vec<String>]) -> (f64, f64) {
    let items: Vec<(Vec<String>, Vec<String>)> = scores
        .iter()
        .zip(truth)
        .map(|(s, truth)| {
            let mut order: Vec<usize> = (0..s.len()).collect();
            order.sort_by(|&x, &y| s[y].total_cmp(&s[x]).then(tags[x].cmp(&tags[y])));
            let top = order.iter().take(TOP_K).map(|&i| tags[i].clone()).collect();
            (truth.clone(), top)
        })
        .collect();
    let m = evaluate(&items);
    (m.p_at_1, m.r_at_5)
}

/// The share of dev photos whose highest router score is their own folder (the router is a
/// probe over the folders' names, in `folders` order).
fn router_accuracy(
    router: &LinearProbe,
    dev_x: &Tensor,
    folders: &[FolderFeatures],
) -> Option<f64> {
    let scores = router.scores(dev_x).ok()?.to_vec2::<f32>().ok()?;
    let labels = folders
        .iter()
        .enumerate()
        .flat_map(|(k, f)| std::iter::repeat_n(k, f.dev_truth.len()));
    let right = scores
        .iter()
        .zip(labels)
        .filter(|(s, k)| {
            let best = (0..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b]));
            best == Some(*k)
        })
        .count();
    Some(right as f64 / scores.len().max(1) as f64)
}

impl FolderFeatures {
    /// The folder `name`'s rows of `features`, with their tag lists as ids into `tags`.
    pub fn new(
        name: String,
        features: &FeatureSet,
        train: (&[u32], &[Vec<String>]),
        dev: (&[u32], Vec<Vec<String>>),
        tags: &[String],
    ) -> Result<Self> {
        let pick = |rows: &[u32]| -> Result<Tensor> {
            let ix = Tensor::new(rows, features.pooled.device())?;
            Ok(features.pooled.index_select(&ix, 0)?)
        };
        Ok(Self {
            name,
            train_x: pick(train.0)?,
            train_t: tag_ids(tags, train.1),
            dev_x: pick(dev.0)?,
            dev_t: tag_ids(tags, &dev.1),
            dev_truth: dev.1,
        })
    }
}

/// Settings of [`fit_probe`].
#[derive(Debug, Clone)]
pub struct ProbeFit {
    pub cfg: ProbeTrainConfig,
    /// The router's (with `mixture`).
    pub router_cfg: ProbeTrainConfig,
    /// One expert per folder and a router over them.
    pub mixture: bool,
    /// Round the weights to f16 (the figures are of the rounded weights).
    pub half: bool,
    /// The encoder whose features the probe reads.
    pub encoder: String,
    /// Provenance recorded in the probe's config: the folders and the vocabulary's model.
    pub data: String,
    pub vocabulary_of: String,
}

/// A trained probe and its merged dev figures.
pub struct FittedProbe {
    pub probe: LinearProbe,
    pub p_at_1: f64,
    pub r_at_5: f64,
}

/// A probe over `tags`, trained on `folders` (in this order); `note` receives progress lines.
/// The probe's config records how it was trained and its merged and per-folder dev figures.
pub fn fit_probe(
    folders: &[FolderFeatures],
    tags: &[String],
    o: &ProbeFit,
    device: &Device,
    mut note: impl FnMut(String),
) -> Result<FittedProbe> {
    let cat = |f: fn(&FolderFeatures) -> &Tensor| -> Result<Tensor> {
        let xs: Vec<Tensor> = folders.iter().map(|x| f(x).clone()).collect();
        Ok(Tensor::cat(&xs, 0)?)
    };
    let (train_x, dev_x) = (cat(|f| &f.train_x)?, cat(|f| &f.dev_x)?);
    let train_t: Vec<Vec<u32>> = folders.iter().flat_map(|f| f.train_t.clone()).collect();
    let dev_t: Vec<Vec<u32>> = folders.iter().flat_map(|f| f.dev_t.clone()).collect();
    let dev_truth: Vec<Vec<String>> = folders.iter().flat_map(|f| f.dev_truth.clone()).collect();
    note(format!(
        "train {} images, dev {} images, {} tags (the vocabulary of {}){}",
        train_t.len(),
        dev_t.len(),
        tags.len(),
        o.vocabulary_of,
        if o.mixture {
            "; a mixture, one expert per folder"
        } else {
            ""
        }
    ));
    let (cfg, router_cfg) = (&o.cfg, &o.router_cfg);
    let config = ProbeConfig {
        encoder: o.encoder.clone(),
        loss: cfg.loss,
        tags: tags.to_vec(),
        experts: Vec::new(),
        training: serde_json::Value::Null,
    };
    // Dev P@1 / R@5 of a probe's ranking, merged and per folder (reported per epoch; selection
    // is on dev loss).
    let figures = |p: &LinearProbe| -> Result<MergedAndPerFolder> {
        let scores = p.scores(&dev_x.to_device(device)?)?.to_vec2::<f32>()?;
        let merged = ranked_figures(&scores, tags, &dev_truth);
        let mut start = 0;
        let per_folder = folders
            .iter()
            .map(|f| {
                let n = f.dev_truth.len();
                let r = ranked_figures(&scores[start..start + n], tags, &f.dev_truth);
                start += n;
                r
            })
            .collect();
        Ok((merged, per_folder))
    };
    let mut report = |what: &str, e: &ProbeEpoch, line: String| {
        note(format!(
            "{what}epoch {:>2}: train loss {:.4}, dev loss {:.4}{line}",
            e.epoch, e.train_loss, e.dev_loss
        ))
    };
    let (probe, history) = if o.mixture {
        let parts: Vec<ProbePart> = folders
            .iter()
            .map(|f| ProbePart {
                name: f.name.clone(),
                train: ProbeData {
                    pooled: &f.train_x,
                    targets: &f.train_t,
                },
                dev: ProbeData {
                    pooled: &f.dev_x,
                    targets: &f.dev_t,
                },
            })
            .collect();
        let (probe, history) =
            train_mixture(cfg, router_cfg, config, &parts, device, |name, e, p| {
                let line = if name == "router" {
                    router_accuracy(p, &dev_x, folders)
                        .map(|a| format!(", dev photos sent to their own folder {a:.4}"))
                        .unwrap_or_default()
                } else {
                    folders
                        .iter()
                        .find(|f| f.name == name)
                        .and_then(|f| {
                            let s = p.scores(&f.dev_x).ok()?.to_vec2::<f32>().ok()?;
                            let (p1, r5) = ranked_figures(&s, &p.config.tags, &f.dev_truth);
                            Some(format!(", its dev P@1 {p1:.4} R@5 {r5:.4}"))
                        })
                        .unwrap_or_default()
                };
                report(&format!("{name}: "), e, line)
            })
            .map_err(|e| Error::msg(format!("training the mixture: {e}")))?;
        (probe, serde_json::to_value(&history)?)
    } else {
        let (probe, history) = train_probe(
            cfg,
            config,
            &ProbeData {
                pooled: &train_x,
                targets: &train_t,
            },
            &ProbeData {
                pooled: &dev_x,
                targets: &dev_t,
            },
            device,
            |e, p| {
                let line = match figures(p) {
                    Ok(((p1, r5), _)) => format!(", dev P@1 {p1:.4} R@5 {r5:.4}"),
                    Err(err) => format!(" ({err})"),
                };
                report("", e, line)
            },
        )
        .map_err(|e| Error::msg(format!("training the probe: {e}")))?;
        (probe, serde_json::to_value(&history)?)
    };
    let mut probe = if o.half {
        probe.rounded_to_f16()?
    } else {
        probe
    };
    let ((p1, r5), per_folder) = figures(&probe)?;
    let per_folder: Vec<serde_json::Value> = folders
        .iter()
        .zip(&per_folder)
        .map(|(f, (p1, r5))| {
            note(format!("{}: dev P@1 {p1:.4} R@5 {r5:.4}", f.name));
            serde_json::json!({
                "data": f.name,
                "train_images": f.train_t.len(),
                "dev_images": f.dev_t.len(),
                "dev_p_at_1": p1,
                "dev_r_at_5": r5,
            })
        })
        .collect();
    probe.config.training = serde_json::json!({
        "command": "hashtale train probe",
        "data": o.data,
        "train_images": train_t.len(),
        "dev_images": dev_t.len(),
        "vocabulary_of": o.vocabulary_of,
        "config": cfg,
        "mixture": o.mixture.then_some(router_cfg),
        "history": history,
        "dev_p_at_1": p1,
        "dev_r_at_5": r5,
        "per_folder": per_folder,
    });
    Ok(FittedProbe {
        probe,
        p_at_1: p1,
        r_at_5: r5,
    })
}
