//! `hashtale eval tags`: hashtag metrics of the taggers (decoder, concepts, probe, fused) or the
//! frequency prior on a split, and `hashtale tune fusion`, which fits the fusion weights on dev
//! sets (the work is `hashtale_train::tags`' eval, taggers and fusion_tune).
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use hashtale_models::tags::fuse::FusionWeights;
use hashtale_models::tags::fusion_path;
use hashtale_train::tags::eval::{
    prior_lists, read_fusion, score, tagger_label, tagger_lists, Source, TaggerEval,
};
use hashtale_train::tags::fusion_tune::{tune_fusion, DevSet, TuneOptions};
use hashtale_train::tags::taggers::{model_encoder, Taggers, Want};

use super::dataset::{load_split_features, split_names, DataArgs};

#[derive(Args)]
pub struct EvalTagsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Split to evaluate (default: dev, or all when the folder has no splits).
    #[arg(long)]
    pub split: Option<String>,
    /// Hashtag model directory (default: the shipped model). Its encoder is used.
    #[arg(long, conflicts_with = "prior")]
    pub model: Option<PathBuf>,
    /// Evaluate the most-frequent-tags prior of the train split instead of a model.
    #[arg(long)]
    pub prior: bool,
    /// Which taggers: fused (decoder + concept hashtags + the probe, where the model has one),
    /// decoder, concepts or probe.
    #[arg(long, value_parser = ["fused", "decoder", "concepts", "probe"], default_value = "decoder")]
    pub source: String,
    /// Fusion weights (default: `fusion.json` in the model's directory).
    #[arg(long)]
    pub fusion: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub beam: usize,
    /// At least this many tags per image from the decoders.
    #[arg(long, default_value_t = 3)]
    pub min_tags: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write each image's ground truth and the taggers' scored hashtags as JSON lines.
    #[arg(long)]
    pub per_image: Option<PathBuf>,
    /// Fuse without the model's linear probe even where it has one (the two-source fusion;
    /// give weights fitted without it with `--fusion`).
    #[arg(long)]
    pub no_probe: bool,
    /// Fuse without the decoder (concepts + probe; weights fitted with `tune fusion
    /// --no-decoder`).
    #[arg(long)]
    pub no_decoder: bool,
}

#[derive(Args)]
pub struct TuneFusionArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Hashtag model directory (default: the shipped model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where to write the weights (the pipeline reads `fusion.json` in the model's directory).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub beam: usize,
    #[arg(long, default_value_t = 3)]
    pub min_tags: usize,
    /// Fuse without the model's linear probe even where it has one (the two-source fusion).
    #[arg(long)]
    pub no_probe: bool,
    /// Fuse without the decoder (concepts + probe only).
    #[arg(long)]
    pub no_decoder: bool,
    /// Keep the probe from costing any dev set more than this much P@1 against the best
    /// fusion without it (e.g. 0.01): only shifts within that floor are considered.
    #[arg(long)]
    pub max_regression: Option<f64>,
    /// Also fit the object-photo gate (a logistic regression on the pooled encoder vector that
    /// predicts whether the first concept hashtag is relevant) and use its score as one more
    /// calibration term; the calibrations see out-of-fold gate scores.
    #[arg(long)]
    pub gate: bool,
    /// The gate's L2 penalty on standardised features.
    #[arg(long, default_value_t = 0.05)]
    pub gate_l2: f64,
    /// Also write each dev image's set, ground truth, the taggers' scored hashtags and its
    /// out-of-fold gate score as JSON lines (for studying the fusion offline).
    #[arg(long)]
    pub per_image: Option<PathBuf>,
}

/// The split an evaluation reads when none is named: dev, or all without a splits file.
fn default_split(a: &DataArgs) -> anyhow::Result<String> {
    let names = split_names(a, a.single()?)?;
    Ok(if names.iter().any(|n| n == "dev") {
        "dev".into()
    } else {
        "all".into()
    })
}

/// The encoder an evaluation needs: the model's own when a model is read.
fn encoder_for(a: &DataArgs, dir: &std::path::Path, reads_model: bool) -> anyhow::Result<DataArgs> {
    let mut data = a.clone();
    if reads_model {
        data.encoder = model_encoder(dir)?.name().to_string();
    }
    Ok(data)
}

pub fn run(a: EvalTagsArgs) -> anyhow::Result<()> {
    let device = hashtale_models::device::best_device();
    let split = match &a.split {
        Some(s) => s.clone(),
        None => default_split(&a.data)?,
    };
    let has_train = split_names(&a.data, a.data.single()?)?
        .iter()
        .any(|n| n == "train");
    if a.prior && !has_train {
        bail!("--prior needs a train split, and this folder has none");
    }
    let source = Source::parse(&a.source).expect("clap checked");
    let reads_model = !a.prior && source != Source::Concepts;
    let fused = source == Source::Fused;
    let paths = super::models::offline_with_tag_model(a.model.as_ref())?;
    let data = encoder_for(&a.data, &paths.tag_model, reads_model)?;
    // Only the prior reads the train split.
    let splits: Vec<&str> = if a.prior && split != "train" {
        vec![split.as_str(), "train"]
    } else {
        vec![split.as_str()]
    };
    let (encoder, features, mut split_rows) = load_split_features(&data, &paths, &splits, &device)?;
    let (rows, gt) = split_rows.remove(0);
    let (lists, label) = if a.prior {
        let (_, train) = split_rows.pop().context("the train split")?;
        (
            prior_lists(&train, rows.len()),
            "frequency prior".to_string(),
        )
    } else {
        let want = Want {
            model: source == Source::Decoder || (fused && !a.no_decoder),
            concepts: source == Source::Concepts || fused,
            probe: match source {
                Source::Probe => Some(true),
                Source::Fused if !a.no_probe => Some(false),
                _ => None,
            },
        };
        let taggers = Taggers::load(&paths, &encoder, want, a.beam, a.min_tags, &device)?;
        let fusion = if fused {
            let path = a
                .fusion
                .clone()
                .unwrap_or_else(|| fusion_path(&paths.tag_model));
            read_fusion(&path)?
        } else {
            FusionWeights::default()
        };
        let o = TaggerEval {
            source,
            fusion,
            per_image: a.per_image.clone(),
        };
        let lists = tagger_lists(&taggers, &features, &rows, &gt, &o, &device)?;
        (lists, tagger_label(&taggers, source, &encoder))
    };
    let data = a.data.single()?.display().to_string();
    let report = score(label, data, split, &gt, lists);
    if a.json {
        println!("{}", serde_json::to_string(&report.metrics)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Fits one calibration per source on the dev split of every `--data` folder (each folder
/// weighs the same), and writes the fusion weights.
pub fn run_tune(a: TuneFusionArgs) -> anyhow::Result<()> {
    let device = hashtale_models::device::best_device();
    let paths = super::models::offline_with_tag_model(a.model.as_ref())?;
    let mut sets = Vec::new();
    let mut with_probe = false;
    for folder in &a.data.data {
        let mut one = a.data.clone();
        one.data = vec![folder.clone()];
        let one = encoder_for(&one, &paths.tag_model, true)?;
        let split = default_split(&one)?;
        let (encoder, features, mut rows) =
            load_split_features(&one, &paths, &[split.as_str()], &device)?;
        let (rows, gt) = rows.remove(0);
        let want = Want {
            model: !a.no_decoder,
            concepts: true,
            probe: if a.no_probe { None } else { Some(false) },
        };
        let taggers = Taggers::load(&paths, &encoder, want, a.beam, a.min_tags, &device)?;
        with_probe = taggers.probe.is_some();
        let outputs = taggers.run(&features, &rows, &device)?;
        sets.push(DevSet {
            info: serde_json::json!({
                "data": folder.display().to_string(),
                "split": split,
                "images": rows.len(),
            }),
            images: gt.into_iter().zip(outputs).collect(),
        });
    }
    let o = TuneOptions {
        no_decoder: a.no_decoder,
        max_regression: a.max_regression,
        gate: a.gate,
        gate_l2: a.gate_l2,
        per_image: a.per_image.clone(),
    };
    let tuned = tune_fusion(sets, with_probe, &o, |line| eprintln!("{line}"))?;
    let w = &tuned.weights;
    std::fs::write(&a.out, serde_json::to_string_pretty(w)? + "\n")
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "decoder {:?}\nconcepts {:?}\nprobe {:?}\nper set (P@1, R@5) {:?}\nwrote {}",
        w.decoder,
        w.concepts,
        w.probe,
        tuned.per_set,
        a.out.display()
    );
    Ok(())
}
