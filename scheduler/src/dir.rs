//! Watched folders: every image file becomes a post (external id = its path relative to the
//! folder). Files are read once their size has stopped changing, so a half-copied file is
//! not taken; the bytes go to the store (by sha256), so the worker never reads local paths.
//!
//! Only events that change a file's content or name count (create, data modify, rename,
//! close-after-write): inotify also reports opens and reads, and the scheduler's own read of a
//! file must not trigger the next one. A file whose bytes hash as they did at its last ingest is
//! not sent to the database again.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashtale_core::{Error, Result};
use hashtale_types::{ImageSource, NewPost};
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Watcher events queued at most; past this the folder is rescanned instead (nothing is lost).
const EVENT_QUEUE: usize = 4096;
/// A file whose post could not be stored (the database is away) is tried again after this.
const RETRY_AFTER: Duration = Duration::from_secs(2);

use crate::Ingestor;

/// File extensions taken from watched folders (the content is checked by magic bytes later).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "gif", "bmp"];

fn is_candidate(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext_ok = p
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
    !hidden && ext_ok
}

/// Whether a watcher event can mean new or changed file content.
pub fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Remove(_) | EventKind::Other => false,
    }
}

/// Image types people drop into folders that hashtale does not decode.
const UNREAD_IMAGE_EXTENSIONS: [&str; 8] =
    ["tif", "tiff", "svg", "heic", "heif", "avif", "jxl", "ico"];

/// Logs an image file of a watched folder that is not taken, so a user can see why (other
/// files, notes and sidecars, are passed over quietly).
fn log_skipped(p: &Path) {
    let unread = p
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| UNREAD_IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
    if unread {
        tracing::info!(
            "skipping {}: not an image type hashtale reads ({})",
            p.display(),
            IMAGE_EXTENSIONS.join(", ")
        );
    }
}

/// Every candidate file under `dir`, sorted.
pub fn scan(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && is_candidate(&e.path()) {
                out.push(e.path());
            } else if ft.is_file() {
                log_skipped(&e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The post for a file of watched folder `root` (blocking file I/O: call off the runtime).
pub fn post_for(root: &Path, path: &Path, max_bytes: u64) -> Result<NewPost> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > max_bytes {
        return Err(Error::BadInput(format!(
            "{} is larger than {max_bytes} bytes",
            path.display()
        )));
    }
    let bytes = std::fs::read(path)?;
    let rel = path.strip_prefix(root).unwrap_or(path);
    Ok(NewPost {
        source: format!("dir:{}", root.display()),
        source_kind: "dir".into(),
        external_id: rel.to_string_lossy().replace('\\', "/"),
        image: ImageSource::Bytes(bytes),
        caption: None,
    })
}

/// Ingests what is in `root` now, then every file that appears or changes, until `cancel`
/// (a file being ingested then is finished first).
pub async fn watch_dir(
    ing: Ingestor,
    root: PathBuf,
    max_bytes: u64,
    cancel: CancellationToken,
) -> Result<()> {
    let root = tokio::fs::canonicalize(&root).await?;
    let (tx, mut rx) = mpsc::channel::<PathBuf>(EVENT_QUEUE);
    let overflow = Arc::new(AtomicBool::new(false));
    let overflowed = overflow.clone();
    // Start watching before the initial scan so nothing falls between the two.
    let mut watcher =
        notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
            Ok(ev) if changes_content(&ev.kind) => {
                for p in ev.paths {
                    if tx.try_send(p).is_err() {
                        overflowed.store(true, Ordering::Relaxed);
                    }
                }
            }
            Ok(_) => {}
            Err(_) => overflowed.store(true, Ordering::Relaxed),
        })
        .map_err(|e| Error::Other(format!("watching {}: {e}", root.display())))?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|e| Error::Other(format!("watching {}: {e}", root.display())))?;
    let files = scan_blocking(&root).await?;
    tracing::info!(
        "watching {} ({} files already there)",
        root.display(),
        files.len()
    );
    // The sha256 each path had when it was last ingested.
    let mut ingested: HashMap<PathBuf, [u8; 32]> = HashMap::new();
    // Paths seen changing, with their last size and when it was seen (a time in the future
    // holds a retry back until then).
    let mut settling: HashMap<PathBuf, (u64, Instant)> = HashMap::new();
    for f in files {
        if !ingest_file(&ing, &root, &f, max_bytes, &mut ingested).await {
            retry_later(&mut settling, f).await;
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            p = rx.recv() => match p {
                Some(p) if is_candidate(&p) => {
                    let size = tokio::fs::metadata(&p).await.map(|m| m.len()).unwrap_or(u64::MAX);
                    settling.insert(p, (size, Instant::now()));
                }
                Some(p) => {
                    if tokio::fs::metadata(&p).await.is_ok_and(|m| m.is_file()) {
                        log_skipped(&p);
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if overflow.swap(false, Ordering::Relaxed) {
                    tracing::warn!("{}: watcher events overflowed, rescanning", root.display());
                    for f in scan_blocking(&root).await.unwrap_or_default() {
                        settling.entry(f).or_insert((u64::MAX, Instant::now()));
                    }
                }
                let now = Instant::now();
                let mut stable = Vec::new();
                for (p, (size, seen)) in settling.iter_mut() {
                    match tokio::fs::metadata(&p).await {
                        Ok(m) if m.is_file() => {
                            if m.len() != *size {
                                *size = m.len();
                                *seen = now;
                            } else if now.duration_since(*seen) >= Duration::from_millis(300) {
                                stable.push(p.clone());
                            }
                        }
                        _ => stable.push(p.clone()), // gone or not a file: forget it
                    }
                }
                for p in stable {
                    settling.remove(&p);
                    if tokio::fs::metadata(&p).await.is_ok_and(|m| m.is_file())
                        && !ingest_file(&ing, &root, &p, max_bytes, &mut ingested).await
                    {
                        retry_later(&mut settling, p).await;
                    }
                }
            }
        }
    }
    drop(watcher);
    Ok(())
}

async fn scan_blocking(root: &Path) -> Result<Vec<PathBuf>> {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || scan(&root))
        .await
        .map_err(|e| Error::Other(format!("scan task: {e}")))?
}

/// Puts a file back among the settling ones, due again in [`RETRY_AFTER`].
async fn retry_later(settling: &mut HashMap<PathBuf, (u64, Instant)>, p: PathBuf) {
    let size = tokio::fs::metadata(&p)
        .await
        .map(|m| m.len())
        .unwrap_or(u64::MAX);
    settling.insert(p, (size, Instant::now() + RETRY_AFTER));
}

/// Ingests one file; `false` when its post could not be stored and it should be tried again
/// (a file that cannot be read or is refused is skipped for good: `true`).
async fn ingest_file(
    ing: &Ingestor,
    root: &Path,
    path: &Path,
    max_bytes: u64,
    ingested: &mut HashMap<PathBuf, [u8; 32]>,
) -> bool {
    let (r, p) = (root.to_path_buf(), path.to_path_buf());
    let post = match tokio::task::spawn_blocking(move || post_for(&r, &p, max_bytes)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::warn!("skipping {}: {e}", path.display());
            return true;
        }
        Err(e) => {
            tracing::error!("reading {}: {e}", path.display());
            return true;
        }
    };
    let digest: [u8; 32] = match &post.image {
        ImageSource::Bytes(b) => Sha256::digest(b).into(),
        ImageSource::Url(u) => Sha256::digest(u.as_bytes()).into(),
    };
    if ingested.get(path) == Some(&digest) {
        return true; // same bytes as at its last ingest: nothing for the database
    }
    match ing.ingest(&post).await {
        Ok(r) => {
            ingested.insert(path.to_path_buf(), digest);
            if r.job_id.is_some() {
                tracing::debug!("new post {} from {}", r.post_id, path.display())
            }
            true
        }
        Err(e) if e.is_retryable() => {
            tracing::error!(
                "ingesting {}: {e} (trying again in {RETRY_AFTER:?})",
                path.display()
            );
            false
        }
        Err(e) => {
            tracing::error!("ingesting {}: {e}", path.display());
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, ModifyKind, RenameMode};

    #[test]
    fn only_content_changes_count() {
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Data(
            DataChange::Content
        ))));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        // What the scheduler's own read of a file produces.
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Read)));
        assert!(!changes_content(&EventKind::Modify(ModifyKind::Metadata(
            notify::event::MetadataKind::AccessTime
        ))));
    }
}
