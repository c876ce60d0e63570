//! `hashtale eval story`: bits/char of a story model, the conditioned comparison and models side
//! by side (the reports are `hashtale_train::story::eval`'s).
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use hashtale_models::story::GenerateOptions;
use hashtale_train::story::corpus::{read_stories, split_dev};
use hashtale_train::story::eval::{CompareOptions, Comparison, ConditionedEval};
use hashtale_train::story::quality::WordList;
use hashtale_train::story::train::TrainConfig;

use super::{load_model, load_writer};

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
        let eval = ConditionedEval::new(&model, &stories)?;
        // The shipped plain model (the seed's method: one hashtag in front of the story).
        let plain_dir = match &a.plain_model {
            Some(d) => d.clone(),
            None => super::super::models::plain_story_model(
                &super::super::models::offline_config()?.models,
            ),
        };
        let plain = load_model(Some(&plain_dir))?;
        let report = eval.report(&plain, a.echo, a.temperature)?;
        return print(a.json, &report);
    }
    let r = model.evaluate(&stories)?;
    if a.json {
        println!("{}", serde_json::json!(r));
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

/// `eval story --compare`: every model on the same stories and the same keyword sets.
fn run_compare(
    a: &EvalStoryArgs,
    split_model: &hashtale_models::story::StoryModel,
    stories: &[String],
) -> anyhow::Result<()> {
    let compare = Comparison::new(
        split_model,
        stories,
        CompareOptions {
            generate: a.generate,
            temperature: a.temperature,
            top_p: a.top_p,
            word_list_name: a.words.display().to_string(),
        },
    )?;
    let word_list = if a.generate > 0 {
        let text = std::fs::read_to_string(&a.words).with_context(|| {
            format!(
                "reading the word list {} (apt-get install wamerican, or --words FILE)",
                a.words.display()
            )
        })?;
        WordList::parse(&text)
    } else {
        WordList::default()
    };
    let compare = compare.with_word_list(word_list);
    let mut rows = Vec::new();
    for path in &a.compare {
        let writer = load_writer(Some(path), None)?;
        rows.push(compare.model(path, &writer)?);
    }
    print(a.json, &compare.report(rows))
}

/// A report as pretty JSON or as its text.
fn print<R: serde::Serialize + std::fmt::Display>(json: bool, report: &R) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
