//! `hashtale train tags` and `hashtale train probe`: train a hashtag model or the linear probe on
//! tagged image folders (the probe's fit is `hashtale_train::tags::probe_fit`).
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use hashtale_models::tags::{ModelKind, TagModel, Vocab};
use hashtale_train::tags::probe::ProbeTrainConfig;
use hashtale_train::tags::probe_fit::{fit_probe, FolderFeatures, ProbeFit};
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

pub fn run_probe(a: TrainProbeArgs) -> anyhow::Result<()> {
    use hashtale_models::tags::probe::ProbeLoss;
    use hashtale_models::tags::TagModelConfig;

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
    let mut folders: Vec<FolderFeatures> = Vec::new();
    for folder in &a.data.data {
        let mut one = a.data.clone();
        one.encoder = model_cfg.encoder.clone();
        one.data = vec![folder.clone()];
        let (encoder, features, rows) =
            load_split_features(&one, &paths, &["train", "dev"], &device)?;
        encoder_name = hashtale_models::encoder::ImageEncoder::name(&encoder).to_string();
        let [train_rows, dev_rows]: [_; 2] = rows.try_into().expect("two splits asked");
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| folder.display().to_string());
        if folders.iter().any(|f| f.name == name) {
            bail!("two --data folders are both named {name}");
        }
        folders.push(FolderFeatures::new(
            name,
            &features,
            (&train_rows.0, &train_rows.1),
            (&dev_rows.0, dev_rows.1),
            &tags,
        )?);
    }
    let cfg = ProbeTrainConfig {
        loss: ProbeLoss::parse(&a.loss).expect("clap checked"),
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
    let data_names: Vec<String> = a
        .data
        .data
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let o = ProbeFit {
        cfg,
        router_cfg,
        mixture: a.mixture,
        half: a.half,
        encoder: encoder_name,
        data: data_names.join(" + "),
        vocabulary_of: model_dir.display().to_string(),
    };
    let fitted = fit_probe(&folders, &tags, &o, &device, |line| eprintln!("{line}"))?;
    let out = a.out.clone().unwrap_or(model_dir);
    fitted.probe.save(&out, a.half)?;
    eprintln!(
        "saved {} (merged dev P@1 {:.4} R@5 {:.4})",
        out.display(),
        fitted.p_at_1,
        fitted.r_at_5
    );
    Ok(())
}
