//! `hashtale hashtags build`, `hashtale eval expand`: the Instagram hashtag co-occurrence
//! statistics and their evaluation on HARRISON (see docs/hashtags.md).
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use hashtale_models::expand::{self, read_tag_set, CooccurrenceStats, Expander, SuggestOptions};
use hashtale_train::data::harrison::read_harrison_tags;
use hashtale_train::expand_eval as eval;

/// Pairs seen in only one or two posts are mostly noise and two thirds of the file; dropping
/// them costs no measurable recall (docs/hashtags.md).
const DEFAULT_MIN_PAIR_COUNT: u64 = 3;

#[derive(Subcommand)]
pub enum HashtagsCmd {
    /// Build the co-occurrence statistics file from HARRISON's lists.
    Build(BuildArgs),
    /// Suggest Instagram hashtags for content tags (to try the statistics by hand).
    Suggest(SuggestArgs),
}

#[derive(Args)]
pub struct SuggestArgs {
    /// Content tags, each optionally with a weight: `dog:0.9 grass:0.4 beach`.
    #[arg(required = true)]
    pub tags: Vec<String>,
    /// Statistics file or folder (default: models.hashtag_stats, else the shipped one).
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Cap on content tags plus suggestions.
    #[arg(long, default_value_t = 15)]
    pub max_total: usize,
    /// File of hashtags never to suggest.
    #[arg(long)]
    pub blocklist: Option<PathBuf>,
    /// File of the only hashtags that may be suggested.
    #[arg(long)]
    pub allowlist: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BuildArgs {
    /// HARRISON folder holding tag_list.txt (and vocab_index.txt).
    #[arg(long)]
    pub harrison: PathBuf,
    /// Output file (default: the shipped assets/hashtags/harrison-cooccurrence.tsv).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Leave out pairs seen together in fewer posts than this (tag counts stay exact).
    #[arg(long, default_value_t = DEFAULT_MIN_PAIR_COUNT)]
    pub min_pair_count: u64,
}

#[derive(Args)]
pub struct EvalExpandArgs {
    /// HARRISON folder holding tag_list.txt (and vocab_index.txt).
    #[arg(long)]
    pub harrison: PathBuf,
    /// Smoothing strength α of the association score.
    #[arg(long, default_value_t = Expander::DEFAULT_ALPHA)]
    pub alpha: f64,
    /// Drop training pairs seen in fewer posts than this, as the shipped file does.
    #[arg(long, default_value_t = DEFAULT_MIN_PAIR_COUNT)]
    pub min_pair_count: u64,
    /// Hashtags asked for per query.
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(c: HashtagsCmd) -> anyhow::Result<()> {
    match c {
        HashtagsCmd::Build(a) => build(a),
        HashtagsCmd::Suggest(a) => suggest(a),
    }
}

fn suggest(a: SuggestArgs) -> anyhow::Result<()> {
    let path = match &a.stats {
        Some(p) => p.clone(),
        None => super::models::offline()?.hashtag_stats,
    };
    let expander = Expander::load(&path)?;
    let mut content = Vec::new();
    for t in &a.tags {
        let (tag, w) = match t.split_once(':') {
            Some((tag, w)) => (
                tag,
                w.parse::<f32>()
                    .with_context(|| format!("weight in `{t}`"))?,
            ),
            None => (t.as_str(), 1.0),
        };
        content.push((tag.to_string(), w));
    }
    let opts = SuggestOptions {
        max_total: a.max_total,
        blocklist: a
            .blocklist
            .as_deref()
            .map(read_tag_set)
            .transpose()?
            .unwrap_or_default(),
        allowlist: a.allowlist.as_deref().map(read_tag_set).transpose()?,
        ..SuggestOptions::default()
    };
    let got = expander.suggest(&content, &opts);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&got)?);
    } else {
        for s in got {
            println!(
                "#{:<24} {:.4}  (from {})",
                s.tag,
                s.score,
                s.because.join(", ")
            );
        }
    }
    Ok(())
}

fn build(a: BuildArgs) -> anyhow::Result<()> {
    let posts = read_harrison_tags(&a.harrison)?;
    let mut stats = CooccurrenceStats::from_posts(&posts);
    stats.prune(a.min_pair_count);
    let out = match a.out {
        Some(out) => out,
        None => expand::stats_file(&super::models::offline()?.hashtag_stats),
    };
    let comment = format!(
        "Hashtag co-occurrence counts derived from HARRISON's tag_list.txt\n\
         (Park, Li, Kim 2016, arXiv:1605.05054); derived counts only, no posts or images.\n\
         Pairs seen in fewer than {} posts are left out. Built by `hashtale hashtags build`.",
        a.min_pair_count
    );
    stats
        .write(&out, a.min_pair_count, &comment)
        .with_context(|| format!("writing {}", out.display()))?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}: {} posts, {} hashtags, {} pairs seen in >= {} posts ({} bytes)",
        out.display(),
        stats.posts(),
        stats.num_tags(),
        stats.num_pairs(),
        a.min_pair_count,
        size
    );
    Ok(())
}

pub fn run_eval(a: EvalExpandArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.k > 0, "--k must be at least 1");
    let posts = read_harrison_tags(&a.harrison)?;
    let r = eval::evaluate(&posts, a.k, a.alpha, a.min_pair_count);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let k = r.k;
    println!(
        "HARRISON: {} posts, {} train, {} held out (i % {} == {}), {} with >= 2 hashtags; \
         alpha = {}, min pair count = {}",
        r.posts,
        r.train_posts,
        r.heldout_posts,
        eval::HOLDOUT_EVERY,
        eval::HOLDOUT_EVERY - 1,
        r.eligible_posts,
        r.alpha,
        r.min_pair_count
    );
    println!(
        "{:<34} {:>8} {:>10} {:>13}",
        "",
        "queries",
        format!("recall@{k}"),
        format!("precision@{k}")
    );
    for (name, m) in [
        ("co-occurrence, every tag in turn", r.model),
        ("popularity prior, every tag", r.prior),
        ("co-occurrence, first tag", r.model_first_tag),
        ("popularity prior, first tag", r.prior_first_tag),
    ] {
        println!(
            "{name:<34} {:>8} {:>10.4} {:>13.4}",
            m.queries, m.recall, m.precision
        );
    }
    Ok(())
}
