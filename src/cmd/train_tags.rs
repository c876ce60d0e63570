//! `hashtale train tags`: trains a hashtag model on a tagged image folder.
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use hashtale_models::tags::train::{train, Split, TrainConfig};
use hashtale_models::tags::{ModelKind, TagModel, Vocab};

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
    let (encoder, features, rows) = load_split_features(&a.data, &["train", "dev"], &device)?;
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
