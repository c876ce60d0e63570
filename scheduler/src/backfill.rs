//! `hashtale backfill FILE`: enqueue many posts from a list of paths or URLs (plain lines,
//! CSV with a header, or JSON Lines), with a progress bar, an optional rate limit, and resume:
//! progress is committed after every chunk, and a rerun starts after the last committed
//! line (posts are unique anyway, so re-reading a line never duplicates work).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashtale_core::{Error, Result};
use hashtale_types::{ImageSource, Ingested, NewPost};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::Ingestor;

/// One line of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub external_id: String,
    /// A URL (http/https) or a local path (relative to the list's folder).
    pub location: String,
    pub caption: Option<String>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(
        alias = "url",
        alias = "image_url",
        alias = "path",
        alias = "image_path"
    )]
    location: String,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    caption: Option<String>,
}

impl From<Record> for Entry {
    fn from(r: Record) -> Self {
        Entry {
            external_id: r
                .external_id
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| r.location.clone()),
            location: r.location,
            caption: r.caption.filter(|s| !s.is_empty()),
        }
    }
}

/// Reads the list: `.csv` (header with `url`/`path`, optional `external_id`, `caption`),
/// `.jsonl`/`.ndjson` (the same keys), anything else one path or URL per line.
pub fn read_entries(file: &Path) -> Result<Vec<Entry>> {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let bad = |line: usize, e: String| Error::BadInput(format!("{}:{line}: {e}", file.display()));
    match ext.as_str() {
        "csv" => {
            let mut rdr = csv::Reader::from_path(file).map_err(|e| bad(0, e.to_string()))?;
            rdr.deserialize::<Record>()
                .enumerate()
                .map(|(i, r)| r.map(Entry::from).map_err(|e| bad(i + 2, e.to_string())))
                .collect()
        }
        "jsonl" | "ndjson" => std::fs::read_to_string(file)?
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str::<Record>(l)
                    .map(Entry::from)
                    .map_err(|e| bad(i + 1, e.to_string()))
            })
            .collect(),
        _ => Ok(std::fs::read_to_string(file)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| Entry {
                external_id: l.to_string(),
                location: l.to_string(),
                caption: None,
            })
            .collect()),
    }
}

/// Options of one backfill run.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    pub file: PathBuf,
    /// Source name for the posts (default: `backfill:<file name>`).
    pub source: Option<String>,
    /// Most posts per second (`None`: as fast as the store and broker go).
    pub rate: Option<f64>,
    /// Posts committed (and progress saved) together.
    pub chunk: usize,
    pub progress_bar: bool,
    /// Largest local file read.
    pub max_bytes: u64,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackfillReport {
    pub total: u64,
    /// Entries skipped because an earlier run had committed them.
    pub resumed_from: u64,
    pub new_jobs: u64,
    pub known: u64,
    pub unreadable: u64,
    /// False when interrupted before the end.
    pub finished: bool,
}

fn to_post(source: &str, base: &Path, e: &Entry, max_bytes: u64) -> Result<NewPost> {
    let image = if e.location.starts_with("http://") || e.location.starts_with("https://") {
        ImageSource::Url(e.location.clone())
    } else {
        let p = base.join(&e.location);
        let len = std::fs::metadata(&p)?.len();
        if len > max_bytes {
            return Err(Error::BadInput(format!(
                "{} is larger than {max_bytes} bytes",
                p.display()
            )));
        }
        ImageSource::Bytes(std::fs::read(&p)?)
    };
    Ok(NewPost {
        source: source.to_string(),
        source_kind: "backfill".into(),
        external_id: e.external_id.clone(),
        image,
        caption: e.caption.clone(),
    })
}

/// Runs (or resumes) a backfill until done or `shutdown`.
pub async fn run_backfill(
    ing: &Ingestor,
    opts: &BackfillOptions,
    shutdown: CancellationToken,
) -> Result<BackfillReport> {
    // The file system is read on blocking threads, never on the runtime's.
    let given = opts.file.clone();
    let (file, entries, len) = tokio::task::spawn_blocking(move || -> Result<_> {
        let file = std::fs::canonicalize(&given)?;
        let entries = read_entries(&file)?;
        let len = std::fs::metadata(&file)?.len();
        Ok((file, entries, len))
    })
    .await
    .map_err(|e| Error::Other(format!("reading the backfill file: {e}")))??;
    let entries = Arc::new(entries);
    let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = opts
        .source
        .clone()
        .unwrap_or_else(|| format!("backfill:{name}"));
    let key = format!("{}|{len}", file.display());
    let total = entries.len() as u64;
    let (id, done) = ing.store.backfill_start(&key, total as i64).await?;
    let done = (done.max(0) as u64).min(total);
    let mut report = BackfillReport {
        total,
        resumed_from: done,
        ..Default::default()
    };
    let bar = if opts.progress_bar {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} posts  {per_sec}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(done);
    let started = Instant::now();
    let mut processed_now = 0u64;
    let chunk = opts.chunk.max(1);
    let mut pos = done as usize;
    while pos < entries.len() {
        if shutdown.is_cancelled() {
            bar.abandon_with_message("interrupted; rerun to resume");
            return Ok(report);
        }
        let end = (pos + chunk).min(entries.len());
        let (all, src, dir, max) = (
            entries.clone(),
            source.clone(),
            base.clone(),
            opts.max_bytes,
        );
        let read = tokio::task::spawn_blocking(move || {
            all[pos..end]
                .iter()
                .map(|e| to_post(&src, &dir, e, max).map_err(|err| (e.location.clone(), err)))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::Other(format!("reading backfill images: {e}")))?;
        let mut posts = Vec::with_capacity(read.len());
        for r in read {
            match r {
                Ok(post) => posts.push(post),
                Err((location, err)) => {
                    tracing::warn!("skipping {location}: {err}");
                    report.unreadable += 1;
                }
            }
        }
        let ingested: Vec<Ingested> = ing.ingest_many(&posts).await?;
        report.new_jobs += ingested.iter().filter(|r| r.job_id.is_some()).count() as u64;
        report.known += ingested.iter().filter(|r| r.job_id.is_none()).count() as u64;
        processed_now += (end - pos) as u64;
        pos = end;
        ing.store
            .backfill_progress(id, pos as i64, pos == entries.len())
            .await?;
        bar.set_position(pos as u64);
        if let Some(rate) = opts.rate.filter(|r| *r > 0.0) {
            let due = Duration::from_secs_f64(processed_now as f64 / rate);
            let elapsed = started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }
    if total == 0 || done < total {
        ing.store.backfill_progress(id, total as i64, true).await?;
    }
    bar.finish_with_message("done");
    report.finished = true;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_three_formats() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("a.csv");
        std::fs::write(
            &csv,
            "url,external_id,caption\nhttp://h/1.jpg,one,First\nimgs/2.png,,\n",
        )
        .unwrap();
        let e = read_entries(&csv).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].external_id, "one");
        assert_eq!(e[0].caption.as_deref(), Some("First"));
        assert_eq!(e[1].external_id, "imgs/2.png");
        assert_eq!(e[1].caption, None);

        let jl = dir.path().join("b.jsonl");
        std::fs::write(
            &jl,
            "{\"image_url\":\"http://h/3.jpg\"}\n\n{\"path\":\"x.png\",\"external_id\":\"x\"}\n",
        )
        .unwrap();
        let e = read_entries(&jl).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].location, "x.png");

        let txt = dir.path().join("c.txt");
        std::fs::write(&txt, "# comment\na.png\n\nhttp://h/b.jpg\n").unwrap();
        assert_eq!(read_entries(&txt).unwrap().len(), 2);

        std::fs::write(&jl, "{not json}\n").unwrap();
        assert!(read_entries(&jl).is_err());
    }
}
