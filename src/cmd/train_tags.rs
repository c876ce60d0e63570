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
}

pub fn run_probe(a: TrainProbeArgs) -> anyhow::Result<()> {
    use hashtale_models::metrics::{evaluate, TOP_K};
    use hashtale_models::tags::probe::{
        tag_ids, train_probe, ProbeConfig, ProbeData, ProbeLoss, ProbeTrainConfig,
    };
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
    let mut data = a.data.clone();
    data.encoder = model_cfg.encoder.clone();
    let (encoder, features, rows) = load_split_features(&data, &paths, &["train", "dev"], &device)?;
    let [train_rows, dev_rows]: [_; 2] = rows.try_into().expect("two splits asked");
    let tags: Vec<String> = model_cfg.vocab.tags().to_vec();
    let pick = |rows: &[u32]| -> anyhow::Result<candle_core::Tensor> {
        let ix = candle_core::Tensor::new(rows, features.pooled.device())?;
        Ok(features.pooled.index_select(&ix, 0)?)
    };
    let (train_x, dev_x) = (pick(&train_rows.0)?, pick(&dev_rows.0)?);
    let (train_t, dev_t) = (tag_ids(&tags, &train_rows.1), tag_ids(&tags, &dev_rows.1));
    eprintln!(
        "train {} images, dev {} images, {} tags (the vocabulary of {})",
        train_rows.0.len(),
        dev_rows.0.len(),
        tags.len(),
        model_dir.display()
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
    let config = ProbeConfig {
        encoder: hashtale_models::encoder::ImageEncoder::name(&encoder).to_string(),
        loss,
        tags: tags.clone(),
        training: serde_json::Value::Null,
    };
    // Dev P@1 / R@5 of a probe's ranking (reported per epoch; selection is on dev loss).
    let dev_figures =
        |p: &hashtale_models::tags::probe::LinearProbe| -> anyhow::Result<(f64, f64)> {
            let scores = p.scores(&dev_x.to_device(&device)?)?.to_vec2::<f32>()?;
            let items: Vec<(Vec<String>, Vec<String>)> = scores
                .iter()
                .zip(&dev_rows.1)
                .map(|(s, truth)| {
                    let mut order: Vec<usize> = (0..s.len()).collect();
                    order.sort_by(|&x, &y| s[y].total_cmp(&s[x]).then(tags[x].cmp(&tags[y])));
                    let top = order.iter().take(TOP_K).map(|&i| tags[i].clone()).collect();
                    (truth.clone(), top)
                })
                .collect();
            let m = evaluate(&items);
            Ok((m.p_at_1, m.r_at_5))
        };
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
        |e, p| match dev_figures(p) {
            Ok((p1, r5)) => eprintln!(
                "epoch {:>2}: train loss {:.4}, dev loss {:.4}, dev P@1 {p1:.4} R@5 {r5:.4}",
                e.epoch, e.train_loss, e.dev_loss
            ),
            Err(err) => eprintln!("epoch {}: {err}", e.epoch),
        },
    )
    .context("training the probe")?;
    let mut probe = if a.half {
        probe.rounded_to_f16()?
    } else {
        probe
    };
    let (p1, r5) = dev_figures(&probe)?;
    let best = history
        .iter()
        .min_by(|x, y| x.dev_loss.total_cmp(&y.dev_loss))
        .expect("at least one epoch");
    let data_names: Vec<String> = a
        .data
        .data
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    probe.config.training = serde_json::json!({
        "command": "hashtale train probe",
        "data": data_names.join(" + "),
        "train_images": train_rows.0.len(),
        "dev_images": dev_rows.0.len(),
        "vocabulary_of": model_dir.display().to_string(),
        "config": cfg,
        "best_epoch": best.epoch,
        "history": history,
        "dev_p_at_1": p1,
        "dev_r_at_5": r5,
    });
    let out = a.out.clone().unwrap_or(model_dir);
    probe.save(&out, a.half)?;
    eprintln!(
        "saved {} (best dev loss {:.4} at epoch {}; merged dev P@1 {p1:.4} R@5 {r5:.4})",
        out.display(),
        best.dev_loss,
        best.epoch
    );
    Ok(())
}
