//! Human ratings from the command line: `hashtale raters add|list|revoke`, `hashtale report
//! ratings` and `hashtale export ratings` (docs/ratings.md).
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hashtale_ratings::{export, ExportFormat, Report};

use super::config::{open_store, runtime, PipelineArgs};

#[derive(Subcommand)]
pub enum RatersCmd {
    /// Add a rater and print their invite link (shown once: only the token's hash is stored).
    Add(RaterAddArgs),
    /// List raters with how many items each answered, skipped and holds open.
    List(RaterListArgs),
    /// Revoke a rater (by id, or by name): their link stops working and their open item is freed.
    Revoke(RaterRevokeArgs),
}

#[derive(Args)]
pub struct RaterAddArgs {
    /// The rater's name, as shown in reports and exports.
    pub name: String,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Args)]
pub struct RaterListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Args)]
pub struct RaterRevokeArgs {
    /// The rater's id or name.
    pub rater: String,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Subcommand)]
pub enum ReportCmd {
    /// Human ratings: Q1–Q3 measures with 95% intervals and agreement, per model version.
    Ratings(ReportRatingsArgs),
}

#[derive(Args)]
pub struct ReportRatingsArgs {
    /// Only this model version (default: every version, side by side).
    #[arg(long)]
    pub model_version: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Subcommand)]
pub enum ExportCmd {
    /// Every stored rating answer, one row each (rater, result, model version, question, value, time).
    Ratings(ExportRatingsArgs),
}

#[derive(Args)]
pub struct ExportRatingsArgs {
    /// csv or jsonl.
    #[arg(long, default_value = "csv")]
    pub format: ExportFormat,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only this model version.
    #[arg(long)]
    pub model_version: Option<String>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

pub fn run_raters(cmd: RatersCmd) -> Result<()> {
    match cmd {
        RatersCmd::Add(a) => {
            let cfg = a.pipeline.load()?;
            runtime()?.block_on(async {
                let store = open_store(&cfg).await?;
                let (rater, token) = hashtale_api::ratings::add_rater(&store, &a.name).await?;
                store.close().await;
                eprintln!(
                    "added rater {:?} (id {}); their invite link, shown only this once:",
                    rater.name, rater.id
                );
                println!("{}", hashtale_api::ratings::invite_link(&cfg, &token));
                Ok(())
            })
        }
        RatersCmd::List(a) => {
            let cfg = a.pipeline.load()?;
            runtime()?.block_on(async {
                let store = open_store(&cfg).await?;
                let raters = store.raters().await?;
                store.close().await;
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&raters)?);
                    return Ok(());
                }
                println!(
                    "{:>5}  {:<24} {:>8} {:>7} {:>4}  status",
                    "id", "name", "answered", "skipped", "open"
                );
                for r in &raters {
                    println!(
                        "{:>5}  {:<24} {:>8} {:>7} {:>4}  {}",
                        r.rater.id,
                        r.rater.name,
                        r.answered,
                        r.skipped,
                        r.open,
                        if r.rater.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                    );
                }
                Ok(())
            })
        }
        RatersCmd::Revoke(a) => {
            let cfg = a.pipeline.load()?;
            runtime()?.block_on(async {
                let store = open_store(&cfg).await?;
                let revoked = store.revoke_rater(&a.rater).await;
                store.close().await;
                match revoked? {
                    Some(r) => {
                        println!("revoked rater {:?} (id {})", r.name, r.id);
                        Ok(())
                    }
                    None => anyhow::bail!("no active rater with id or name {:?}", a.rater),
                }
            })
        }
    }
}

pub fn run_report(cmd: ReportCmd) -> Result<()> {
    let ReportCmd::Ratings(a) = cmd;
    let cfg = a.pipeline.load()?;
    runtime()?.block_on(async {
        let store = open_store(&cfg).await?;
        let rows = store.rating_rows(a.model_version.as_deref()).await?;
        store.close().await;
        let report = Report::build(&rows, &cfg.ratings.questions);
        if a.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.to_text());
        }
        Ok(())
    })
}

pub fn run_export(cmd: ExportCmd) -> Result<()> {
    let ExportCmd::Ratings(a) = cmd;
    let cfg = a.pipeline.load()?;
    runtime()?.block_on(async {
        let store = open_store(&cfg).await?;
        let rows = store.rating_rows(a.model_version.as_deref()).await?;
        store.close().await;
        let n = match &a.out {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let mut w = std::io::BufWriter::new(file);
                let n = export::write(a.format, &rows, &mut w)?;
                w.flush()?;
                n
            }
            None => {
                let stdout = std::io::stdout();
                let mut w = stdout.lock();
                let n = export::write(a.format, &rows, &mut w)?;
                w.flush()?;
                n
            }
        };
        eprintln!(
            "exported {n} rating rows as {}{}",
            a.format.extension(),
            a.out
                .as_ref()
                .map(|p| format!(" to {}", p.display()))
                .unwrap_or_default()
        );
        Ok(())
    })
}
