//! `hashtale`: hashtags and short stories for images.
//!
//! One binary with subcommands; each lives in `src/cmd/`. Errors surface here through anyhow.
use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "hashtale",
    version,
    about = "Hashtags and short stories for images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print ranked hashtags (and optionally a story) for images.
    Tag(cmd::tag::TagArgs),
    /// Write stories seeded with a hashtag.
    Story(cmd::story::StoryArgs),
    /// Write a story training corpus with a llama2.c model, prompted with hashtag words.
    StoryCorpus(cmd::story::StoryCorpusArgs),
    /// ImageNet top-5 of the encoder, to check the pretrained weights.
    Classify(cmd::classify::ClassifyArgs),
    /// Train a model.
    #[command(subcommand)]
    Train(TrainCmd),
    /// Evaluate a model.
    #[command(subcommand)]
    Eval(EvalCmd),
    /// Fit settings on dev sets.
    #[command(subcommand)]
    Tune(TuneCmd),
    /// Instagram hashtag statistics.
    #[command(subcommand)]
    Hashtags(cmd::hashtags::HashtagsCmd),
    /// Everything in one process: SQLite, in-process queue, scheduler, worker, API.
    Run(cmd::run::RunArgs),
    /// The HTTP API.
    Serve(cmd::serve::ServeArgs),
    /// The batching worker (runs the models on queued jobs).
    Worker(cmd::worker::WorkerArgs),
    /// Watched folders, feeds and the ingest queue → jobs.
    Scheduler(cmd::scheduler::SchedulerArgs),
    /// Apply the database migrations.
    Migrate(cmd::migrate::MigrateArgs),
    /// Enqueue a list of images (paths/URLs; plain, CSV or JSONL), resumable.
    Backfill(cmd::backfill::BackfillArgs),
    /// Show the effective configuration.
    #[command(subcommand)]
    Config(cmd::config::ConfigCmd),
    /// Benchmarks (pipeline overhead, model throughput).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCmd),
    /// Human raters: invite links (add), list, revoke.
    #[command(subcommand)]
    Raters(cmd::ratings::RatersCmd),
    /// Reports (human ratings).
    #[command(subcommand)]
    Report(cmd::ratings::ReportCmd),
    /// Exports (human ratings as CSV or JSONL).
    #[command(subcommand)]
    Export(cmd::ratings::ExportCmd),
}

#[derive(Subcommand)]
enum TrainCmd {
    /// Train a hashtag model (attention, show-tell or multi-label) on a tagged image folder.
    Tags(cmd::train_tags::TrainTagsArgs),
    /// Train the linear-probe hashtag source over pooled encoder features, on a hashtag
    /// model's vocabulary (written beside that model: probe.json + probe.safetensors).
    Probe(cmd::train_tags::TrainProbeArgs),
    /// Train the character-level story language model.
    Story(cmd::story::TrainStoryArgs),
}

#[derive(Subcommand)]
enum EvalCmd {
    /// Hashtag metrics (P@1, R@5, A@5, per-word P/R/F1, N+, BLEU-1) on a tagged image folder.
    Tags(cmd::eval_tags::EvalTagsArgs),
    /// Bits per character of the story model on a text file.
    Story(cmd::story::EvalStoryArgs),
    /// Recall/precision@5 of the Instagram hashtag expansion on HARRISON's held-out posts.
    Expand(cmd::hashtags::EvalExpandArgs),
}

#[derive(Subcommand)]
enum TuneCmd {
    /// Fit the calibration that fuses decoder and concept hashtags, on the dev split of each
    /// `--data` folder (each folder weighs the same).
    Fusion(cmd::eval_tags::TuneFusionArgs),
}

/// Keeps freed memory in the process for reuse. The models allocate and free tens of MB per
/// layer and batch; by default glibc maps each of those afresh and unmaps it on free, so every
/// batch paid again in page faults, which made most of `eval tags`' time system time (54% of
/// user time measured; 5% with this, docs/performance.md). The cost is that the resident
/// size stays at its peak.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory_for_reuse() {
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        // One arena: big buffers freed by a model thread stay reusable by every thread (other
        // arenas' heaps are capped at 64 MB and map anything larger).
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory_for_reuse() {}

fn main() -> anyhow::Result<()> {
    keep_freed_memory_for_reuse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Tag(a) => cmd::tag::run(a),
        Command::Story(a) => cmd::story::run(a),
        Command::StoryCorpus(a) => cmd::story::run_corpus(a),
        Command::Classify(a) => cmd::classify::run(a),
        Command::Train(TrainCmd::Tags(a)) => cmd::train_tags::run(a),
        Command::Train(TrainCmd::Probe(a)) => cmd::train_tags::run_probe(a),
        Command::Train(TrainCmd::Story(a)) => cmd::story::run_train(a),
        Command::Eval(EvalCmd::Tags(a)) => cmd::eval_tags::run(a),
        Command::Eval(EvalCmd::Story(a)) => cmd::story::run_eval(a),
        Command::Eval(EvalCmd::Expand(a)) => cmd::hashtags::run_eval(a),
        Command::Tune(TuneCmd::Fusion(a)) => cmd::eval_tags::run_tune(a),
        Command::Hashtags(c) => cmd::hashtags::run(c),
        Command::Run(a) => cmd::run::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Worker(a) => cmd::worker::run(a),
        Command::Scheduler(a) => cmd::scheduler::run(a),
        Command::Migrate(a) => cmd::migrate::run(a),
        Command::Backfill(a) => cmd::backfill::run(a),
        Command::Config(c) => cmd::config::run(c),
        Command::Bench(c) => cmd::bench::run(c),
        Command::Raters(c) => cmd::ratings::run_raters(c),
        Command::Report(c) => cmd::ratings::run_report(c),
        Command::Export(c) => cmd::ratings::run_export(c),
    }
}
