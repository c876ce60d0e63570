//! `hashtale story`, `hashtale train story`, `hashtale eval story`: the hashtag-seeded story model.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use hashtale_models::story::corpus::{read_stories, split_dev, CorpusSpec};
use hashtale_models::story::keywords::mentions;
use hashtale_models::story::train::{train, TrainConfig};
use hashtale_models::story::{Conditioning, GenerateOptions, StoryModel};

#[derive(Args)]
pub struct StoryArgs {
    /// The hashtag that seeds the story, e.g. "#beach".
    pub seed: String,
    /// How many stories to write (one batch, one RNG stream each).
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// Sampling temperature (0: always the most likely character).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Sample among the k most likely characters only.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Story length in characters.
    #[arg(long, default_value_t = 500)]
    pub max_chars: usize,
    /// End at a sentence end near the length limit.
    #[arg(long)]
    pub stop_at_sentence_end: bool,
    /// RNG seed (same seed, same stories).
    #[arg(long, default_value_t = GenerateOptions::default().seed)]
    pub rng_seed: u64,
    /// Model directory (default: $HASHTALE_STORY_MODEL or the shipped assets/story).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

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
    /// Save weights as f16 (how the shipped model is stored).
    #[arg(long)]
    pub f16: bool,
    /// Overrides of the preset (boxed: they make the argument struct large).
    #[command(flatten)]
    pub o: Box<TrainOverrides>,
}

/// Settings that override the chosen preset.
#[derive(Args)]
pub struct TrainOverrides {
    #[arg(long)]
    pub name: Option<String>,
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

#[derive(Args)]
pub struct EvalStoryArgs {
    /// Text file of stories separated by blank lines.
    #[arg(long)]
    pub text: PathBuf,
    /// Model directory (default: $HASHTALE_STORY_MODEL or the shipped assets/story).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Which stories to score: all, or the model's own dev/train split of this file (the same
    /// corpus file it was trained on; the split is recomputed from its stored settings).
    #[arg(long, value_enum, default_value_t = Split::All)]
    pub split: Split,
    /// Compare a hashtag-conditioned model (`--model`, default the shipped one) with the plain
    /// model (`--plain-model`) on the same characters: each story given its own keyword prefix,
    /// the same model without a prefix, and the plain model.
    #[arg(long)]
    pub conditioned: bool,
    /// The plain model for `--conditioned` (default: the shipped assets/story-plain).
    #[arg(long)]
    pub plain_model: Option<PathBuf>,
    /// With `--conditioned`: also generate this many stories per model, seeded with held-out
    /// stories' keywords, and report how often a story mentions a seed word (hashtag echo).
    #[arg(long, default_value_t = 0)]
    pub echo: usize,
    /// Temperature of the echo generations.
    #[arg(long, default_value_t = GenerateOptions::default().temperature)]
    pub temperature: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Split {
    All,
    Dev,
    Train,
}

fn load_model(dir: Option<&PathBuf>) -> anyhow::Result<StoryModel> {
    let device = hashtale_models::device::best_device();
    let dir = dir.cloned().unwrap_or_else(StoryModel::default_dir);
    StoryModel::load(&dir, &device)
        .with_context(|| format!("loading the story model from {}", dir.display()))
}

pub fn run(a: StoryArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.n >= 1, "--n must be at least 1");
    let model = load_model(a.model.as_ref())?;
    let opts = GenerateOptions {
        max_chars: a.max_chars,
        temperature: a.temperature,
        top_k: a.top_k,
        stop_at_sentence_end: a.stop_at_sentence_end,
        seed: a.rng_seed,
    };
    let seeds = vec![a.seed.clone(); a.n];
    let stories = model.generate_batch(&seeds, &opts)?;
    if a.json {
        let v = serde_json::json!({
            "seed": a.seed,
            "model": model.version(),
            "stories": stories,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (i, s) in stories.iter().enumerate() {
            if i > 0 {
                println!();
            }
            println!("{} {s}", a.seed);
        }
    }
    Ok(())
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
    set!(tag_prob, dev_frac, seed, eval_every);
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
    if a.conditioned {
        c.conditioning = Conditioning::Keywords;
        c.keyword_vocab = a.keyword_vocab.iter().map(PathBuf::from).collect();
        if let Some(p) = a.prefix_drop {
            anyhow::ensure!((0.0..=1.0).contains(&p), "--prefix-drop must be in 0..1");
            c.prefix_drop = p;
        }
        c.keyword_dim = a.keyword_dim;
    }
    let report = train(&c, &a.out, a.init.as_deref())?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

pub fn run_eval(a: EvalStoryArgs) -> anyhow::Result<()> {
    let model = load_model(a.model.as_ref())?;
    let mut stories =
        read_stories(&a.text).with_context(|| format!("reading {}", a.text.display()))?;
    if a.split != Split::All {
        let tc: TrainConfig = serde_json::from_value(model.meta().train.clone())
            .context("the model records no training settings, so it has no split")?;
        let (train, dev) = split_dev(&stories, tc.dev_frac, tc.split_seed);
        stories = if a.split == Split::Dev { dev } else { train };
    }
    if a.conditioned {
        return run_eval_conditioned(&a, &model, &stories);
    }
    let r = model.evaluate(&stories)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"bits_per_char": r.bits_per_char, "chars": r.chars})
        );
    } else {
        println!(
            "{:.4} bits/char over {} characters ({} stories, {})",
            r.bits_per_char,
            r.chars,
            stories.len(),
            model.version()
        );
    }
    Ok(())
}

/// The shipped plain model (the seed's method: one hashtag in front of the story).
fn default_plain_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/story-plain")
}

fn run_eval_conditioned(
    a: &EvalStoryArgs,
    model: &StoryModel,
    stories: &[String],
) -> anyhow::Result<()> {
    let kw = model.keywords().context(
        "--conditioned needs a hashtag-conditioned model (trained with `train story --conditioned`)",
    )?;
    let plain = load_model(Some(
        &a.plain_model.clone().unwrap_or_else(default_plain_dir),
    ))?;
    anyhow::ensure!(
        !plain.is_conditioned(),
        "--plain-model is a conditioned model"
    );
    let docs: Vec<(Vec<String>, String)> =
        stories.iter().map(|s| (kw.extract(s), s.clone())).collect();
    let no_prefix: Vec<(Vec<String>, String)> =
        stories.iter().map(|s| (Vec::new(), s.clone())).collect();
    // A control: each story read after the next story's keywords. If the model reads its
    // hashtags, wrong ones cost bits.
    let mismatched: Vec<(Vec<String>, String)> = docs
        .iter()
        .enumerate()
        .map(|(i, (_, s))| (docs[(i + 1) % docs.len()].0.clone(), s.clone()))
        .collect();
    let with = docs.iter().filter(|(k, _)| !k.is_empty()).count();
    let cond = model.evaluate_with_tags(&docs)?;
    let cond_blind = model.evaluate_with_tags(&no_prefix)?;
    let cond_wrong = model.evaluate_with_tags(&mismatched)?;
    let plain_r = plain.evaluate_with_tags(&no_prefix)?;
    let mut out = serde_json::json!({
        "stories": stories.len(),
        "stories_with_keywords": with,
        "conditioned": {"model": model.version(), "bits_per_char": cond.bits_per_char, "chars": cond.chars},
        "conditioned_no_prefix": {"bits_per_char": cond_blind.bits_per_char, "chars": cond_blind.chars},
        "conditioned_other_storys_prefix": {"bits_per_char": cond_wrong.bits_per_char, "chars": cond_wrong.chars},
        "plain": {"model": plain.version(), "bits_per_char": plain_r.bits_per_char, "chars": plain_r.chars},
    });
    if a.echo > 0 {
        let seeds: Vec<Vec<String>> = docs
            .iter()
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, _)| k.clone())
            .cycle()
            .take(a.echo)
            .collect();
        anyhow::ensure!(
            !seeds.is_empty(),
            "no held-out story has keywords to seed with"
        );
        let opts = GenerateOptions {
            temperature: a.temperature,
            stop_at_sentence_end: true,
            ..GenerateOptions::default()
        };
        let mut per_model = serde_json::Map::new();
        for (name, m) in [("conditioned", model), ("plain", &plain)] {
            let mut texts = Vec::with_capacity(seeds.len());
            for (chunk_i, chunk) in seeds.chunks(64).enumerate() {
                let streams: Vec<u64> = (0..chunk.len() as u64)
                    .map(|i| chunk_i as u64 * 64 + i)
                    .collect();
                texts.extend(m.generate_for_tags(chunk, &streams, &opts)?);
            }
            let echoed = seeds
                .iter()
                .zip(&texts)
                .filter(|(k, t)| k.iter().any(|w| mentions(t, w)))
                .count();
            let samples: Vec<serde_json::Value> = seeds
                .iter()
                .zip(&texts)
                .take(5)
                .map(|(k, t)| serde_json::json!({"hashtags": k, "prompt": m.prompt_for(k).trim(), "story": t}))
                .collect();
            per_model.insert(
                name.into(),
                serde_json::json!({
                    "generations": texts.len(),
                    "echoed": echoed,
                    "echo_rate": echoed as f64 / texts.len() as f64,
                    "samples": samples,
                }),
            );
        }
        out["echo"] = serde_json::json!({"temperature": a.temperature, "models": per_model});
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} stories ({with} with keywords), bits/char on the same {} characters:",
            stories.len(),
            cond.chars
        );
        println!(
            "  conditioned, own keyword prefix: {:.4}",
            cond.bits_per_char
        );
        println!(
            "  conditioned, no prefix:          {:.4}",
            cond_blind.bits_per_char
        );
        println!(
            "  conditioned, next story's prefix: {:.4}",
            cond_wrong.bits_per_char
        );
        println!(
            "  plain model:                     {:.4}",
            plain_r.bits_per_char
        );
        if let Some(e) = out.get("echo") {
            for name in ["conditioned", "plain"] {
                let m = &e["models"][name];
                println!(
                    "  echo, {name}: {} of {} stories mention a seed word ({:.1}%)",
                    m["echoed"],
                    m["generations"],
                    100.0 * m["echo_rate"].as_f64().unwrap_or(0.0)
                );
            }
        }
    }
    Ok(())
}
