//! `hashtale train story`: the arguments, as overrides of a preset [`TrainConfig`].
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use hashtale_models::story::Conditioning;
use hashtale_train::story::corpus::CorpusSpec;
use hashtale_train::story::train::{train, TrainConfig};

#[derive(Clone, Copy, ValueEnum)]
pub enum Preset {
    /// hashtale's default (see docs/story.md).
    Default,
    /// The seed's reference setting: embedding 1024, 2 layers, RMSProp lr 0.01, 100 epochs.
    Seed,
}

#[derive(Args)]
pub struct TrainStoryArgs {
    /// Output checkpoint directory (best model; the latest goes to OUT/last).
    #[arg(long)]
    pub out: PathBuf,
    /// Corpus file, PATH or PATH:WEIGHT; repeatable. The first one picks the best checkpoint.
    #[arg(long = "corpus", default_values_t = [
        "../shared/data/stories/personabank.txt:4".to_string(),
        "../shared/data/stories/rocstories-cloze.txt:1".to_string(),
    ])]
    pub corpora: Vec<String>,
    #[arg(long, value_enum, default_value_t = Preset::Default)]
    pub preset: Preset,
    /// Start from this checkpoint's weights (fine-tuning).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Train the hashtag-conditioned model: each story after a prefix line of its own keywords
    /// (`#beach #dog`), words of the story found in the hashtag vocabularies, ranked by TF-IDF.
    #[arg(long)]
    pub conditioned: bool,
    /// Hashtag vocabularies for the keywords (repeatable): a word per line, HARRISON's
    /// vocab_index.txt, or a tag model's config.json.
    #[arg(long = "keyword-vocab", default_values_t = [
        "assets/tags/config.json".to_string(),
        "../shared/data/harrison/vocab_index.txt".to_string(),
    ])]
    pub keyword_vocab: Vec<String>,
    /// Chance that a conditioned training story goes without its prefix.
    #[arg(long)]
    pub prefix_drop: Option<f64>,
    /// Width of the keyword vectors a conditioned model reads at every step, beside the prefix
    /// line (0: the prefix line only).
    #[arg(long, default_value_t = 64)]
    pub keyword_dim: usize,
    /// Keyword copy (subword models): learned gates raise the pieces that begin the story's
    /// hashtags and the piece that continues one begun, so the model can write a hashtag it has
    /// rarely seen.
    #[arg(long)]
    pub keyword_copy: bool,
    /// Save weights as f16 (how the shipped model is stored).
    #[arg(long)]
    pub f16: bool,
    /// The nucleus the checkpoint recommends for sampling (stored in its config.json; `story`,
    /// `tag` and the pipeline use it unless told otherwise).
    #[arg(long)]
    pub sampling_top_p: Option<f64>,
    /// Overrides of the preset (boxed: they make the argument struct large).
    #[command(flatten)]
    pub o: Box<TrainOverrides>,
}

/// Settings that override the chosen preset.
#[derive(Args)]
pub struct TrainOverrides {
    #[arg(long)]
    pub name: Option<String>,
    /// Train a subword model: a byte-level BPE vocabulary of this many pieces, learnt from the
    /// training stories (default: characters).
    #[arg(long)]
    pub subword_vocab: Option<usize>,
    #[arg(long)]
    pub emb: Option<usize>,
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Truncated BPTT length.
    #[arg(long)]
    pub bptt: Option<usize>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// RMSProp decay ρ.
    #[arg(long)]
    pub decay: Option<f64>,
    #[arg(long)]
    pub momentum: Option<f64>,
    #[arg(long)]
    pub epochs: Option<f64>,
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Minutes of training steps; the schedule is re-planned to end within them.
    #[arg(long)]
    pub time_budget_min: Option<f64>,
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Cosine floor as a fraction of the learning rate (1: constant).
    #[arg(long)]
    pub min_lr_frac: Option<f64>,
    /// Global gradient-norm clip (0: none).
    #[arg(long)]
    pub clip: Option<f64>,
    #[arg(long)]
    pub tag_prob: Option<f64>,
    #[arg(long)]
    pub dev_frac: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub eval_every: Option<usize>,
}

pub fn run_train(a: TrainStoryArgs) -> anyhow::Result<()> {
    let mut c = match a.preset {
        Preset::Default => TrainConfig::default_story(),
        Preset::Seed => TrainConfig::reference(),
    };
    c.corpora = a
        .corpora
        .iter()
        .map(|s| s.parse::<CorpusSpec>())
        .collect::<Result<_, _>>()?;
    let o = &a.o;
    if let Some(v) = o.name.clone() {
        c.name = v;
    }
    macro_rules! set {
        ($($f:ident),*) => { $(if let Some(v) = o.$f { c.$f = v; })* };
    }
    set!(
        emb,
        hidden,
        layers,
        dropout,
        bptt,
        batch,
        epochs,
        warmup_steps,
        min_lr_frac,
        clip
    );
    set!(tag_prob, dev_frac, seed, eval_every, subword_vocab);
    if let Some(v) = o.lr {
        c.optim.lr = v;
    }
    if let Some(v) = o.decay {
        c.optim.decay = v;
    }
    if let Some(v) = o.momentum {
        c.optim.momentum = v;
    }
    if o.max_steps.is_some() {
        c.max_steps = o.max_steps;
    }
    if o.time_budget_min.is_some() {
        c.time_budget_min = o.time_budget_min;
    }
    c.f16 = a.f16;
    if let Some(p) = a.sampling_top_p {
        anyhow::ensure!(p > 0.0 && p <= 1.0, "--sampling-top-p must be in (0, 1]");
        c.sampling.top_p = Some(p);
    }
    if a.conditioned {
        c.conditioning = Conditioning::Keywords;
        c.keyword_vocab = a.keyword_vocab.iter().map(PathBuf::from).collect();
        if let Some(p) = a.prefix_drop {
            anyhow::ensure!((0.0..=1.0).contains(&p), "--prefix-drop must be in 0..1");
            c.prefix_drop = p;
        }
        c.keyword_dim = a.keyword_dim;
        c.keyword_copy = a.keyword_copy;
    }
    let report = train(&c, &a.out, a.init.as_deref())?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
