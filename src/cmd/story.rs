//! `hashtale story`, `hashtale story-corpus`, `hashtale train story`, `hashtale eval story`: the
//! hashtag-seeded story model.
mod eval;
mod train;

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hashtale_models::story::{GenerateOptions, StoryModel, StoryWriter};
use hashtale_train::story::llama_corpus::{prompt_words, write_corpus, CorpusOptions};

pub use eval::{run_eval, EvalStoryArgs};
pub use train::{run_train, TrainStoryArgs};

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

pub fn run_corpus(a: StoryCorpusArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.batch >= 1, "--batch must be at least 1");
    let StoryWriter::Llama2c(model) = load_writer(Some(&a.model), a.tokenizer.as_ref())? else {
        anyhow::bail!("--model must be a llama2.c checkpoint file");
    };
    let words = prompt_words(&a.words)?;
    let done = write_corpus(
        &model,
        &words,
        &CorpusOptions {
            out: a.out,
            megabytes: a.megabytes,
            batch: a.batch,
            temperature: a.temperature,
            max_chars: a.max_chars,
            seed: a.seed,
        },
    )?;
    println!(
        "{}: {:.1} MB, {} stories written in {:.0} s",
        done.out.display(),
        done.bytes as f64 / 1e6,
        done.stories,
        done.seconds
    );
    Ok(())
}
