//! `hashtale story`, `hashtale train story`, `hashtale eval story`: the hashtag-seeded story model.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use hashtale_models::story::keywords::mentions;
use hashtale_models::story::{Conditioning, GenerateOptions, StoryModel, StoryWriter};
use hashtale_train::story::corpus::{read_stories, split_dev, CorpusSpec};
use hashtale_train::story::train::{train, TrainConfig};

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
    /// Nucleus sampling: sample among the most likely pieces that together reach this
    /// probability (default: the model's own setting, if its config names one; 1: off).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Story length in characters.
    #[arg(long, default_value_t = 500)]
    pub max_chars: usize,
    /// End at a sentence end near the length limit.
    #[arg(long)]
    pub stop_at_sentence_end: bool,
    /// RNG seed (same seed, same stories).
    #[arg(long, default_value_t = GenerateOptions::default().seed)]
    pub rng_seed: u64,
    /// Model: a char/subword LSTM checkpoint directory (default: models.story_model, else the
    /// shipped assets/story-subword) or a llama2.c checkpoint file (`stories15M.bin`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Tokenizer of a llama2.c model (default: tokenizer.bin or the one tok*.bin beside it).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `hashtale story-corpus`: a training corpus written by a llama2.c story model, prompted with
/// hashtag words.
#[derive(Args)]
pub struct StoryCorpusArgs {
    /// The llama2.c checkpoint that writes the stories.
    #[arg(long)]
    pub model: PathBuf,
    /// Its tokenizer (default: tokenizer.bin or the one tok*.bin beside it).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Word lists the prompts draw from (repeatable): a word per line, HARRISON's
    /// vocab_index.txt, a tag model's config.json, or the concept table concepts.tsv.
    #[arg(long = "words", required = true)]
    pub words: Vec<PathBuf>,
    /// Output text file (stories separated by blank lines); an existing file is continued from
    /// the batch count in OUT.batches.
    #[arg(long)]
    pub out: PathBuf,
    /// Stop once the file holds this many megabytes.
    #[arg(long, default_value_t = 20.0)]
    pub megabytes: f64,
    /// Stories written per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.9)]
    pub temperature: f64,
    /// Longest story in characters (each ends at a sentence end or the model's end token).
    #[arg(long, default_value_t = 900)]
    pub max_chars: usize,
    /// Base RNG seed (of the word draws and the stories).
    #[arg(long, default_value_t = 20_261_201)]
    pub seed: u64,
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

#[derive(Args)]
pub struct EvalStoryArgs {
    /// Text file of stories separated by blank lines.
    #[arg(long)]
    pub text: PathBuf,
    /// Model directory (default: models.story_model, else the shipped assets/story-subword).
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
    /// Temperature of the echo and `--compare` generations.
    #[arg(long, default_value_t = GenerateOptions::default().temperature)]
    pub temperature: f64,
    /// Nucleus of the `--compare` generations (default: each model's own setting; 1: off).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Compare these story models side by side (repeatable; a char/subword checkpoint
    /// directory or a llama2.c `.bin`): bits/char on the same characters and, with
    /// `--generate`, the quality of their stories.
    #[arg(long = "compare")]
    pub compare: Vec<PathBuf>,
    /// With `--compare`: stories generated per model (batch 64, 500 characters, stop at a
    /// sentence end), seeded with the keyword sets of the held-out stories.
    #[arg(long, default_value_t = 0)]
    pub generate: usize,
    /// Word list for the non-word rate (default: Debian's wamerican).
    #[arg(long, default_value = "/usr/share/dict/american-english")]
    pub words: PathBuf,
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

fn load_writer(path: Option<&PathBuf>, tokenizer: Option<&PathBuf>) -> anyhow::Result<StoryWriter> {
    let device = hashtale_models::device::best_device();
    let (path, tokenizer) = match path {
        Some(p) => (p.clone(), tokenizer.cloned()),
        None => {
            let shipped = super::models::offline()?;
            (
                shipped.story_model,
                tokenizer.cloned().or(shipped.story_tokenizer),
            )
        }
    };
    StoryWriter::load(&path, tokenizer.as_deref(), &device)
        .with_context(|| format!("loading the story model from {}", path.display()))
}

fn load_model(dir: Option<&PathBuf>) -> anyhow::Result<StoryModel> {
    let device = hashtale_models::device::best_device();
    let dir = match dir {
        Some(d) => d.clone(),
        None => super::models::offline()?.story_model,
    };
    StoryModel::load(&dir, &device)
        .with_context(|| format!("loading the story model from {}", dir.display()))
}

pub fn run(a: StoryArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.n >= 1, "--n must be at least 1");
    let model = load_writer(a.model.as_ref(), a.tokenizer.as_ref())?;
    let opts = GenerateOptions {
        max_chars: a.max_chars,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        stop_at_sentence_end: a.stop_at_sentence_end,
        seed: a.rng_seed,
    };
    let seeds = vec![a.seed.clone(); a.n];
    let stories = match &model {
        StoryWriter::CharLm(m) => m.generate_batch(&seeds, &opts)?,
        StoryWriter::Llama2c(m) => {
            let tags: Vec<String> = a.seed.split_whitespace().map(str::to_string).collect();
            let streams: Vec<u64> = (0..a.n as u64).collect();
            m.generate_for_tags(&vec![tags; a.n], &streams, &opts)?
        }
    };
    let print_seed = matches!(model, StoryWriter::CharLm(_));
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
            if print_seed {
                println!("{} {s}", a.seed);
            } else {
                println!("{s}");
            }
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
    if !a.compare.is_empty() {
        return run_compare(&a, &model, &stories);
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
fn default_plain_dir() -> anyhow::Result<PathBuf> {
    Ok(super::models::plain_story_model(
        &super::models::offline_config()?.models,
    ))
}

fn run_eval_conditioned(
    a: &EvalStoryArgs,
    model: &StoryModel,
    stories: &[String],
) -> anyhow::Result<()> {
    let kw = model.keywords().context(
        "--conditioned needs a hashtag-conditioned model (trained with `train story --conditioned`)",
    )?;
    let plain_dir = match &a.plain_model {
        Some(d) => d.clone(),
        None => default_plain_dir()?,
    };
    let plain = load_model(Some(&plain_dir))?;
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

pub fn run_corpus(a: StoryCorpusArgs) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    use std::io::Write;
    anyhow::ensure!(a.batch >= 1, "--batch must be at least 1");
    let StoryWriter::Llama2c(model) = load_writer(Some(&a.model), a.tokenizer.as_ref())? else {
        anyhow::bail!("--model must be a llama2.c checkpoint file");
    };
    let mut words: Vec<String> = Vec::new();
    for p in &a.words {
        words.extend(
            hashtale_models::story::keywords::read_vocab(p)
                .with_context(|| format!("reading {}", p.display()))?,
        );
    }
    // Hashtags the prompt can say as a word: letters only, 3+ long, each once.
    let mut seen = std::collections::HashSet::new();
    words.retain(|w| {
        let w = hashtale_models::story::keywords::normalize_tag(w);
        w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase()) && seen.insert(w)
    });
    words.sort();
    anyhow::ensure!(!words.is_empty(), "the word lists hold no usable words");
    // The batches already written: a continued run starts at the next one.
    let progress = a.out.with_extension("batches");
    let existing: u64 = match std::fs::read_to_string(&progress) {
        Ok(t) => t
            .trim()
            .parse()
            .with_context(|| format!("reading {}", progress.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading {}", progress.display())),
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.out)
        .with_context(|| format!("opening {}", a.out.display()))?;
    let target = (a.megabytes * 1e6) as u64;
    let opts = GenerateOptions {
        max_chars: a.max_chars,
        temperature: a.temperature,
        top_k: None,
        top_p: None,
        stop_at_sentence_end: true,
        seed: a.seed,
    };
    tracing::info!(
        words = words.len(),
        batches_done = existing,
        model = %model.version(),
        "writing a story corpus to {}",
        a.out.display()
    );
    let mut batch_no = existing;
    let started = std::time::Instant::now();
    let mut written_now = 0usize;
    loop {
        let size = file.metadata()?.len();
        if size >= target {
            break;
        }
        // Batch b's word draws and stories depend on b alone, so a continued run goes on where
        // the last one stopped.
        let mut rng = rand::rngs::StdRng::seed_from_u64(hashtale_models::story::stream_seed(
            a.seed ^ 0x5eed,
            batch_no,
        ));
        let prompts: Vec<String> = (0..a.batch)
            .map(|_| {
                let k = rng.gen_range(1..=3);
                let picked: Vec<&String> = (0..k)
                    .map(|_| &words[rng.gen_range(0..words.len())])
                    .collect();
                hashtale_models::story::llama2c::corpus_prompt(&picked, &mut rng)
            })
            .collect();
        let streams: Vec<u64> = (0..a.batch as u64)
            .map(|i| batch_no * a.batch as u64 + i)
            .collect();
        let stories = model.generate(&prompts, &streams, &opts)?;
        let mut text = String::new();
        for (p, s) in prompts.iter().zip(&stories) {
            let story = format!("{p} {s}");
            let story = story.trim();
            // A story of one sentence taught nothing; skip it.
            if story.len() < 100 {
                continue;
            }
            text.push_str(story);
            text.push_str("\n\n");
            written_now += 1;
        }
        file.write_all(text.as_bytes())?;
        batch_no += 1;
        std::fs::write(&progress, batch_no.to_string())?;
        if batch_no.is_multiple_of(10) {
            let mb = file.metadata()?.len() as f64 / 1e6;
            tracing::info!(
                "{mb:.1} MB, {written_now} stories this run, {:.0} stories/s",
                written_now as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "{}: {:.1} MB, {written_now} stories written in {:.0} s",
        a.out.display(),
        file.metadata()?.len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `eval story --compare`: every model on the same stories and the same keyword sets.
fn run_compare(
    a: &EvalStoryArgs,
    split_model: &StoryModel,
    stories: &[String],
) -> anyhow::Result<()> {
    use hashtale_train::story::quality;
    // Keyword sets come from the conditioned model that chose the split (the shipped one by
    // default), so every model is asked about the same hashtags.
    let kw = split_model
        .keywords()
        .context("--compare needs --model to be a hashtag-conditioned model: its keyword table picks the seeds")?;
    let docs: Vec<(Vec<String>, String)> =
        stories.iter().map(|s| (kw.extract(s), s.clone())).collect();
    let seeds: Vec<Vec<String>> = docs
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, _)| k.clone())
        .cycle()
        .take(a.generate)
        .collect();
    anyhow::ensure!(
        a.generate == 0 || !seeds.is_empty(),
        "no held-out story has keywords to seed with"
    );
    let word_list = if a.generate > 0 {
        let text = std::fs::read_to_string(&a.words).with_context(|| {
            format!(
                "reading the word list {} (apt-get install wamerican, or --words FILE)",
                a.words.display()
            )
        })?;
        quality::WordList::parse(&text)
    } else {
        quality::WordList::default()
    };
    let opts = GenerateOptions {
        max_chars: 500,
        temperature: a.temperature,
        top_k: None,
        top_p: a.top_p,
        stop_at_sentence_end: true,
        seed: GenerateOptions::default().seed,
    };
    let mut rows = Vec::new();
    for path in &a.compare {
        let writer = load_writer(Some(path), None)?;
        // Bits/char: a conditioned model reads each story after its own keyword prefix, the
        // others read the bare story; the same characters are scored either way.
        // A conditioned model is also scored without its hashtags (an empty prefix line), on
        // the same characters: what it knows of the text apart from being told the topic.
        let mut without_tags = None;
        let (bpc, how) = match &writer {
            StoryWriter::CharLm(m) if m.is_conditioned() => {
                let own: Vec<(Vec<String>, String)> = docs
                    .iter()
                    .map(|(k, s)| (m.story_tags(k), s.clone()))
                    .collect();
                let none: Vec<(Vec<String>, String)> =
                    docs.iter().map(|(_, s)| (Vec::new(), s.clone())).collect();
                without_tags = Some(m.evaluate_with_tags(&none)?.bits_per_char);
                (m.evaluate_with_tags(&own)?, "own keyword prefix")
            }
            StoryWriter::CharLm(m) => (m.evaluate(stories)?, "no prefix"),
            StoryWriter::Llama2c(m) => (m.evaluate(stories)?, "from BOS"),
        };
        let mut row = serde_json::json!({
            "model": writer.version(),
            "path": path.display().to_string(),
            "bits_per_char": bpc.bits_per_char,
            "bits_per_char_without_hashtags": without_tags,
            "chars": bpc.chars,
            "read": how,
        });
        if a.generate > 0 {
            let started = std::time::Instant::now();
            let mut texts = Vec::with_capacity(seeds.len());
            let mut tag_lists = Vec::with_capacity(seeds.len());
            for (chunk_i, chunk) in seeds.chunks(64).enumerate() {
                let streams: Vec<u64> = (0..chunk.len() as u64)
                    .map(|i| chunk_i as u64 * 64 + i)
                    .collect();
                let tags: Vec<Vec<String>> = chunk.iter().map(|k| writer.story_tags(k)).collect();
                // A llama2.c model's prompt already names the hashtags: only what it wrote after
                // the prompt is measured, so echo means the same for every model.
                let out = match &writer {
                    StoryWriter::Llama2c(m) => {
                        let prompts: Vec<String> = tags
                            .iter()
                            .map(|t| hashtale_models::story::llama2c::prompt_for_tags(t))
                            .collect();
                        m.generate(&prompts, &streams, &opts)?
                    }
                    w => w.generate_for_tags(&tags, &streams, &opts)?,
                };
                texts.extend(out);
                tag_lists.extend(tags);
            }
            let secs = started.elapsed().as_secs_f64();
            let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
            let (non_word, n_words) = word_list.non_word_rate(&texts);
            let samples: Vec<serde_json::Value> = tag_lists
                .iter()
                .zip(&texts)
                .take(5)
                .map(|(k, t)| serde_json::json!({"hashtags": k, "story": t}))
                .collect();
            row["generation"] = serde_json::json!({
                "stories": texts.len(),
                "chars": chars,
                "seconds": secs,
                "chars_per_sec": chars as f64 / secs.max(1e-9),
                "non_word_rate": non_word,
                "words": n_words,
                "echo_rate": quality::echo_rate(&tag_lists, &texts),
                "repeated_4grams": quality::repeated_4gram_rate(&texts),
                "distinct_2": quality::distinct_2(&texts),
                "samples": samples,
            });
        }
        rows.push(row);
    }
    // The yardstick: the held-out human stories under the same measures (their echo is of
    // their own keywords, so it is 100% by construction and left out).
    let human = (a.generate > 0).then(|| {
        let (non_word, n_words) = word_list.non_word_rate(stories);
        serde_json::json!({
            "stories": stories.len(),
            "non_word_rate": non_word,
            "words": n_words,
            "repeated_4grams": quality::repeated_4gram_rate(stories),
            "distinct_2": quality::distinct_2(stories),
        })
    });
    let out = serde_json::json!({
        "stories": stories.len(),
        "human": human,
        "temperature": a.temperature,
        "word_list": a.words.display().to_string(),
        "models": rows,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} stories; bits/char on the same characters, then {} generated stories per model:",
        stories.len(),
        a.generate
    );
    for r in &rows {
        print!(
            "  {:<44} {:.4} bits/char ({})",
            r["model"].as_str().unwrap_or(""),
            r["bits_per_char"].as_f64().unwrap_or(f64::NAN),
            r["read"].as_str().unwrap_or("")
        );
        if let Some(b) = r["bits_per_char_without_hashtags"].as_f64() {
            print!(", {b:.4} without hashtags");
        }
        if let Some(g) = r.get("generation") {
            let f = |k: &str| g[k].as_f64().unwrap_or(f64::NAN);
            print!(
                "; non-words {:.2}%, echo {:.1}%, repeated 4-grams {:.1}%, distinct-2 {:.3}, {:.0} chars/s",
                100.0 * f("non_word_rate"),
                100.0 * f("echo_rate"),
                100.0 * f("repeated_4grams"),
                f("distinct_2"),
                f("chars_per_sec")
            );
        }
        println!();
    }
    if let Some(h) = &human {
        let f = |k: &str| h[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "  {:<44} non-words {:.2}%, repeated 4-grams {:.1}%, distinct-2 {:.3}",
            "the held-out human stories",
            100.0 * f("non_word_rate"),
            100.0 * f("repeated_4grams"),
            f("distinct_2")
        );
    }
    Ok(())
}
