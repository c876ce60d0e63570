//! Watched folders: every image file becomes a post (external id = its path relative to the
//! folder). Files are read once their size has stopped changing, so a half-copied file is
//! not taken; the bytes go to the store (by sha256), so the worker never reads local paths.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hashtale_core::types::{ImageSource, NewPost};
use hashtale_core::{Error, Result};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

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
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The post for a file of watched folder `root`.
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

/// Ingests what is in `root` now, then every file that appears, until `shutdown`.
pub async fn watch_dir(
    ing: Ingestor,
    root: PathBuf,
    max_bytes: u64,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let root = std::fs::canonicalize(&root)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    // Start watching before the initial scan so nothing falls between the two.
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
    })
    .map_err(|e| Error::Other(format!("watching {}: {e}", root.display())))?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|e| Error::Other(format!("watching {}: {e}", root.display())))?;
    let files = scan(&root)?;
    tracing::info!(
        "watching {} ({} files already there)",
        root.display(),
        files.len()
    );
    for f in files {
        ingest_file(&ing, &root, &f, max_bytes).await;
    }
    // Paths seen changing, with their last size and when it was seen.
    let mut settling: HashMap<PathBuf, (u64, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            p = rx.recv() => match p {
                Some(p) if is_candidate(&p) => {
                    let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(u64::MAX);
                    settling.insert(p, (size, Instant::now()));
                }
                Some(_) => {}
                None => break,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let mut stable = Vec::new();
                for (p, (size, seen)) in settling.iter_mut() {
                    match std::fs::metadata(p) {
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
                    if p.is_file() {
                        ingest_file(&ing, &root, &p, max_bytes).await;
                    }
                }
            }
        }
    }
    drop(watcher);
    Ok(())
}

async fn ingest_file(ing: &Ingestor, root: &Path, path: &Path, max_bytes: u64) {
    let post = match post_for(root, path, max_bytes) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("skipping {}: {e}", path.display());
            return;
        }
    };
    match ing.ingest(&post).await {
        Ok(r) if r.job_id.is_some() => {
            tracing::debug!("new post {} from {}", r.post_id, path.display())
        }
        Ok(_) => {}
        Err(e) => tracing::error!("ingesting {}: {e}", path.display()),
    }
}
