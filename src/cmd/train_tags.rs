//! `hashtale train tags`: trains a hashtag model on a tagged image folder.
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use hashtale_models::tags::{ModelKind, TagModel, Vocab};
use hashtale_train::tags::train::{train, Split, TrainConfig};

use super::dataset::{load_split_features, DataArgs};

#[derive(Args)]
pub struct TrainTagsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Which model: the attention decoder or one of the two baselines.
    #[arg(long, value_parser = ["attention", "show-tell", "multi-label"], default_value = "attention")]
    pub kind: String,
    /// Output directory (config.json + model.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 4e-4)]
    pub lr: f64,
    /// λ of the attention penalty Σ_i (1 − Σ_t α_ti)².
    #[arg(long, default_value_t = 1.0)]
    pub attention_penalty: f64,
    #[arg(long, default_value_t = 0.5)]
    pub dropout: f32,
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep tags seen at least this many times in train.
    #[arg(long, default_value_t = 1)]
    pub min_count: usize,
    /// Store the final weights as f16 (half the size).
    #[arg(long)]
    pub half: bool,
}

pub fn parse_kind(s: &str) -> anyhow::Result<ModelKind> {
    Ok(match s {
        "attention" => ModelKind::Attention,
        "show-tell" => ModelKind::ShowTell,
        "multi-label" => ModelKind::MultiLabel,
        other => bail!("unknown model kind {other}"),
    })
}

pub fn run(a: TrainTagsArgs) -> anyhow::Result<()> {
    let device = hashtale_models::device::best_device();
    let paths = super::models::offline()?;
    let (encoder, features, rows) =
        load_split_features(&a.data, &paths, &["train", "dev"], &device)?;
    let [train_rows, dev_rows]: [_; 2] = rows.try_into().expect("two splits asked");
    let vocab = Vocab::build(train_rows.1.iter(), a.min_count);
    eprintln!(
        "train {} images, dev {} images, {} tags",
        train_rows.0.len(),
        dev_rows.0.len(),
        vocab.tags().len()
    );
    let cfg = TrainConfig {
        kind: parse_kind(&a.kind)?,
        epochs: a.epochs,
        batch_size: a.batch_size,
        learning_rate: a.lr,
        attention_penalty: a.attention_penalty,
        dropout: a.dropout,
        patience: a.patience,
        seed: a.seed,
        ..TrainConfig::default()
    };
    let train_split = Split {
        features: &features,
        rows: train_rows.0,
        tags: train_rows.1,
    };
    let dev_split = Split {
        features: &features,
        rows: dev_rows.0,
        tags: dev_rows.1,
    };
    let ckpt = a.out.join("checkpoint");
    let trained = train(
        &cfg,
        &vocab,
        &train_split,
        &dev_split,
        &device,
        true,
        Some(&ckpt),
    )
    .context("training")?;
    let mut config = trained.config.clone();
    config.encoder = hashtale_models::encoder::ImageEncoder::name(&encoder).to_string();
    let data: Vec<String> = a
        .data
        .data
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    config.training["data"] = serde_json::json!(data.join(" + "));
    TagModel::save(&a.out, &config, &trained.varmap, a.half)?;
    let _ = std::fs::remove_dir_all(&ckpt);
    let best = trained
        .history
        .iter()
        .min_by(|x, y| x.dev_loss.total_cmp(&y.dev_loss))
        .expect("at least one epoch");
    eprintln!(
        "saved {} (best dev loss {:.4} at epoch {})",
        a.out.display(),
        best.dev_loss,
        best.epoch
    );
    Ok(())
}

#[derive(Args)]
pub struct TrainProbeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The hashtag model whose vocabulary the probe scores (default: the shipped model); its
    /// encoder's features are used.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output directory (default: the model's directory, so the fusion finds the probe).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// softmax: cross-entropy against each image's normalised tag list; bce: a sigmoid per tag.
    #[arg(long, value_parser = ["softmax", "bce"], default_value = "softmax")]
    pub loss: String,
    #[arg(long, default_value_t = 40)]
    pub epochs: usize,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Store the weights as f16 (the figures printed are of the rounded weights).
    #[arg(long)]
    pub half: bool,
    /// A mixture: one expert per `--data` folder (trained and early-stopped on that folder
    /// alone) and a softmax router over the folders, read from the same pooled vector.
    #[arg(long)]
    pub mixture: bool,
    /// The router's weight decay (with `--mixture`; its other knobs are the experts').
    #[arg(long, default_value_t = 0.1)]
    pub router_weight_decay: f64,
}

/// (P@1, R@5) over every folder's dev images, then per folder.
type MergedAndPerFolder = ((f64, f64), Vec<(f64, f64)>);

/// One `--data` folder's pooled features and tag ids, per split.
struct FolderFeatures {
    name: String,
    train_x: candle_core::Tensor,
    train_t: Vec<Vec<u32>>,
    dev_x: candle_core::Tensor,
    dev_t: Vec<Vec<u32>>,
    dev_truth: Vec<Vec<String>>,
}

/// P@1 and R@5 of the ranking that `scores` (B, V) give over `tags`, against `truth`.
fn ranked_figures(scores: &[Vec<f32>], tags: &[String], truth: &[Vec<String>]) -> (f64, f64) {
    use hashtale_train::metrics::{evaluate, TOP_K};
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
    router: &hashtale_models::tags::probe::LinearProbe,
    dev_x: &candle_core::Tensor,
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

pub fn run_probe(a: TrainProbeArgs) -> anyhow::Result<()> {
    use candle_core::Tensor;
    use hashtale_models::tags::probe::{LinearProbe, ProbeConfig, ProbeLoss};
    use hashtale_models::tags::TagModelConfig;
    use hashtale_train::tags::probe::{
        tag_ids, train_mixture, train_probe, ProbeData, ProbePart, ProbeTrainConfig,
    };

    let device = hashtale_models::device::best_device();
    let paths = super::models::offline_with_tag_model(a.model.as_ref())?;
    let model_dir = paths.tag_model.clone();
    let cfg_path = model_dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .with_context(|| format!("reading {}", cfg_path.display()))?;
    let mut model_cfg: TagModelConfig =
        serde_json::from_str(&text).with_context(|| format!("reading {}", cfg_path.display()))?;
    model_cfg.vocab.reindex();
    let tags: Vec<String> = model_cfg.vocab.tags().to_vec();
    if a.mixture && a.data.data.len() < 2 {
        bail!("--mixture needs two or more --data folders (one expert each)");
    }
    // Each folder on its own (a mixture's experts and the per-folder figures need them apart;
    // one layer trains on them in this order, as the merged load would give).
    let mut encoder_name = String::new();
    let mut folders = Vec::new();
    for folder in &a.data.data {
        let mut one = a.data.clone();
        one.encoder = model_cfg.encoder.clone();
        one.data = vec![folder.clone()];
        let (encoder, features, rows) =
            load_split_features(&one, &paths, &["train", "dev"], &device)?;
        encoder_name = hashtale_models::encoder::ImageEncoder::name(&encoder).to_string();
        let [train_rows, dev_rows]: [_; 2] = rows.try_into().expect("two splits asked");
        let pick = |rows: &[u32]| -> anyhow::Result<Tensor> {
            let ix = Tensor::new(rows, features.pooled.device())?;
            Ok(features.pooled.index_select(&ix, 0)?)
        };
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| folder.display().to_string());
        if folders.iter().any(|f: &FolderFeatures| f.name == name) {
            bail!("two --data folders are both named {name}");
        }
        folders.push(FolderFeatures {
            name,
            train_x: pick(&train_rows.0)?,
            train_t: tag_ids(&tags, &train_rows.1),
            dev_x: pick(&dev_rows.0)?,
            dev_t: tag_ids(&tags, &dev_rows.1),
            dev_truth: dev_rows.1,
        });
    }
    let cat = |f: fn(&FolderFeatures) -> &Tensor| -> anyhow::Result<Tensor> {
        let xs: Vec<Tensor> = folders.iter().map(|x| f(x).clone()).collect();
        Ok(Tensor::cat(&xs, 0)?)
    };
    let (train_x, dev_x) = (cat(|f| &f.train_x)?, cat(|f| &f.dev_x)?);
    let train_t: Vec<Vec<u32>> = folders.iter().flat_map(|f| f.train_t.clone()).collect();
    let dev_t: Vec<Vec<u32>> = folders.iter().flat_map(|f| f.dev_t.clone()).collect();
    let dev_truth: Vec<Vec<String>> = folders.iter().flat_map(|f| f.dev_truth.clone()).collect();
    eprintln!(
        "train {} images, dev {} images, {} tags (the vocabulary of {}){}",
        train_t.len(),
        dev_t.len(),
        tags.len(),
        model_dir.display(),
        if a.mixture {
            "; a mixture, one expert per folder"
        } else {
            ""
        }
    );
    let loss = ProbeLoss::parse(&a.loss).expect("clap checked");
    let cfg = ProbeTrainConfig {
        loss,
        epochs: a.epochs,
        batch_size: a.batch_size,
        learning_rate: a.lr,
        weight_decay: a.weight_decay,
        patience: a.patience,
        seed: a.seed,
    };
    let router_cfg = ProbeTrainConfig {
        loss: ProbeLoss::Softmax,
        weight_decay: a.router_weight_decay,
        ..cfg.clone()
    };
    let config = ProbeConfig {
        encoder: encoder_name,
        loss,
        tags: tags.clone(),
        experts: Vec::new(),
        training: serde_json::Value::Null,
    };
    // Dev P@1 / R@5 of a probe's ranking, merged and per folder (reported per epoch; selection
    // is on dev loss).
    let figures = |p: &LinearProbe| -> anyhow::Result<MergedAndPerFolder> {
        let scores = p.scores(&dev_x.to_device(&device)?)?.to_vec2::<f32>()?;
        let merged = ranked_figures(&scores, &tags, &dev_truth);
        let mut start = 0;
        let per_folder = folders
            .iter()
            .map(|f| {
                let n = f.dev_truth.len();
                let r = ranked_figures(&scores[start..start + n], &tags, &f.dev_truth);
                start += n;
                r
            })
            .collect();
        Ok((merged, per_folder))
    };
    let report = |what: &str, e: &hashtale_train::tags::probe::ProbeEpoch, line: String| {
        eprintln!(
            "{what}epoch {:>2}: train loss {:.4}, dev loss {:.4}{line}",
            e.epoch, e.train_loss, e.dev_loss
        )
    };
    let (probe, history) = if a.mixture {
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
            train_mixture(&cfg, &router_cfg, config, &parts, &device, |name, e, p| {
                let line = if name == "router" {
                    router_accuracy(p, &dev_x, &folders)
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
            .context("training the mixture")?;
        (probe, serde_json::to_value(&history)?)
    } else {
        let (probe, history) = train_probe(
            &cfg,
            config,
            &ProbeData {
                pooled: &train_x,
                targets: &train_t,
            },
            &ProbeData {
                pooled: &dev_x,
                targets: &dev_t,
            },
            &device,
            |e, p| {
                let line = match figures(p) {
                    Ok(((p1, r5), _)) => format!(", dev P@1 {p1:.4} R@5 {r5:.4}"),
                    Err(err) => format!(" ({err})"),
                };
                report("", e, line)
            },
        )
        .context("training the probe")?;
        (probe, serde_json::to_value(&history)?)
    };
    let mut probe = if a.half {
        probe.rounded_to_f16()?
    } else {
        probe
    };
    let ((p1, r5), per_folder) = figures(&probe)?;
    let per_folder: Vec<serde_json::Value> = folders
        .iter()
        .zip(&per_folder)
        .map(|(f, (p1, r5))| {
            eprintln!("{}: dev P@1 {p1:.4} R@5 {r5:.4}", f.name);
            serde_json::json!({
                "data": f.name,
                "train_images": f.train_t.len(),
                "dev_images": f.dev_t.len(),
                "dev_p_at_1": p1,
                "dev_r_at_5": r5,
            })
        })
        .collect();
    let data_names: Vec<String> = a
        .data
        .data
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    probe.config.training = serde_json::json!({
        "command": "hashtale train probe",
        "data": data_names.join(" + "),
        "train_images": train_t.len(),
        "dev_images": dev_t.len(),
        "vocabulary_of": model_dir.display().to_string(),
        "config": cfg,
        "mixture": a.mixture.then_some(&router_cfg),
        "history": history,
        "dev_p_at_1": p1,
        "dev_r_at_5": r5,
        "per_folder": per_folder,
    });
    let out = a.out.clone().unwrap_or(model_dir);
    probe.save(&out, a.half)?;
    eprintln!(
        "saved {} (merged dev P@1 {p1:.4} R@5 {r5:.4})",
        out.display()
    );
    Ok(())
}
