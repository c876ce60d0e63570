//! `hashtale eval tags`: hashtag metrics of a model (or the frequency prior) on a split.
use std::path::PathBuf;

use clap::Args;
use hashtale_models::metrics::{bleu1, bleu1_seed, evaluate, frequency_prior, TOP_K};
use hashtale_models::tags::{default_model_dir, BeamOptions, TagModel};

use super::dataset::{load_split_features, DataArgs};

#[derive(Args)]
pub struct EvalTagsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Split to evaluate.
    #[arg(long, default_value = "dev")]
    pub split: String,
    /// Model directory (default: the shipped model).
    #[arg(long, conflicts_with = "prior")]
    pub model: Option<PathBuf>,
    /// Evaluate the most-frequent-tags prior of the train split instead of a model.
    #[arg(long)]
    pub prior: bool,
    #[arg(long, default_value_t = 3)]
    pub beam: usize,
    /// At least this many tags per image from the decoders.
    #[arg(long, default_value_t = 3)]
    pub min_tags: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvalTagsArgs) -> anyhow::Result<()> {
    let device = hashtale_models::device::best_device();
    let (features, (rows, gt), (_, train_tags)) =
        load_split_features(&a.data, &[a.split.as_str(), "train"], &device)?;
    // Per image: (ground truth, the model's own list, the list filled to 5).
    let mut own: Vec<Vec<String>> = Vec::with_capacity(rows.len());
    let mut filled: Vec<Vec<String>> = Vec::with_capacity(rows.len());
    let label;
    if a.prior {
        let prior = frequency_prior(&train_tags, TOP_K);
        own = vec![prior.clone(); rows.len()];
        filled = own.clone();
        label = "frequency prior".to_string();
    } else {
        let dir = a.model.clone().unwrap_or_else(default_model_dir);
        let model = TagModel::load(&dir, &device)?;
        let opts = BeamOptions {
            beam_size: a.beam,
            max_tags: model.config.max_tags,
            min_tags: a.min_tags,
        };
        for chunk in rows.chunks(64) {
            let enc = features.batch(chunk, &device)?;
            for p in model.predict(&enc, opts)? {
                own.push(p.tags.iter().map(|t| t.tag.clone()).collect());
                filled.push(p.filled(TOP_K));
            }
        }
        label = format!("{} ({})", dir.display(), model.version());
    }
    let items: Vec<(Vec<String>, Vec<String>)> = gt.iter().cloned().zip(filled).collect();
    let mut m = evaluate(&items);
    // BLEU-1 compares the model's own list (not the filled one) with the ground truth.
    let n = gt.len().max(1) as f64;
    m.bleu1 = gt.iter().zip(&own).map(|(g, p)| bleu1(p, g)).sum::<f64>() / n;
    m.bleu1_seed = gt
        .iter()
        .zip(&own)
        .map(|(g, p)| bleu1_seed(g, p))
        .sum::<f64>()
        / n;
    if a.json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        let mean_len = own.iter().map(Vec::len).sum::<usize>() as f64 / n;
        println!(
            "{label} on {} [{}]: {} images",
            a.data.data.display(),
            a.split,
            m.images
        );
        println!(
            "  P@1 {:.4}  R@5 {:.4}  A@5 {:.4}",
            m.p_at_1, m.r_at_5, m.a_at_5
        );
        println!(
            "  per-word (5 tags/image) P {:.4}  R {:.4}  F1 {:.4}  N+ {}",
            m.word_precision, m.word_recall, m.word_f1, m.n_plus
        );
        println!(
            "  BLEU-1 {:.4}  BLEU-1 (seed deck) {:.4}",
            m.bleu1, m.bleu1_seed
        );
        println!("  mean tags emitted {mean_len:.2}; lists shorter than 5 filled from the model's next-tag distribution");
    }
    Ok(())
}
