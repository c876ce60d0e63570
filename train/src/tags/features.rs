//! Encoder features computed once per dataset and cached on disk, so training epochs only run
//! the decoders.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

use hashtale_models::encoder::{Encoded, ImageEncoder};
use hashtale_models::hash::{digest, DigestWidth};
use hashtale_models::image_prep::load_image;

use crate::{Error, Result};

/// Features of a list of images. The grid is kept as f16 (half the memory; the decoders cast
/// each batch back to f32).
#[derive(Debug, Clone)]
pub struct FeatureSet {
    pub images: Vec<PathBuf>,
    /// (N, L, D) f16.
    pub grid: Tensor,
    /// (N, D) f32.
    pub pooled: Tensor,
}

impl FeatureSet {
    /// Rows `idx` as an f32 [`Encoded`] batch on `device`.
    pub fn batch(&self, idx: &[u32], device: &Device) -> Result<Encoded> {
        let ix = Tensor::new(idx, self.grid.device())?;
        Ok(Encoded {
            grid: self
                .grid
                .index_select(&ix, 0)?
                .to_dtype(DType::F32)?
                .to_device(device)?,
            pooled: self.pooled.index_select(&ix, 0)?.to_device(device)?,
        })
    }

    /// The rows of several sets, one after another (e.g. two datasets' cached features).
    pub fn concat(sets: Vec<FeatureSet>) -> Result<FeatureSet> {
        if sets.len() == 1 {
            return Ok(sets.into_iter().next().expect("one set"));
        }
        let grids: Vec<&Tensor> = sets.iter().map(|s| &s.grid).collect();
        let pooled: Vec<&Tensor> = sets.iter().map(|s| &s.pooled).collect();
        Ok(FeatureSet {
            grid: Tensor::cat(&grids, 0)?,
            pooled: Tensor::cat(&pooled, 0)?,
            images: sets.iter().flat_map(|s| s.images.iter().cloned()).collect(),
        })
    }

    /// Row index of each image path.
    pub fn index(&self) -> HashMap<&Path, usize> {
        self.images
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_path(), i))
            .collect()
    }
}

/// Encodes `images` in batches, skipping (and reporting) files that fail to decode.
pub fn extract(
    encoder: &dyn ImageEncoder,
    images: &[PathBuf],
    batch_size: usize,
    show_progress: bool,
) -> Result<(FeatureSet, Vec<(PathBuf, String)>)> {
    let pb = if show_progress {
        let pb = ProgressBar::new(images.len() as u64);
        pb.set_style(
            ProgressStyle::with_template("encoding {bar:30} {pos}/{len} {per_sec} eta {eta}")
                .expect("static template"),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let mut kept = Vec::new();
    let mut failed = Vec::new();
    let mut grids = Vec::new();
    let mut pooled = Vec::new();
    for chunk in images.chunks(batch_size.max(1)) {
        let mut decoded = Vec::with_capacity(chunk.len());
        for path in chunk {
            match load_image(path) {
                Ok(img) => {
                    decoded.push(img);
                    kept.push(path.clone());
                }
                Err(e) => failed.push((path.clone(), e.to_string())),
            }
        }
        if !decoded.is_empty() {
            let enc = encoder.encode_images(&decoded)?;
            grids.push(enc.grid.to_dtype(DType::F16)?.to_device(&Device::Cpu)?);
            pooled.push(enc.pooled.to_device(&Device::Cpu)?);
        }
        pb.inc(chunk.len() as u64);
        if pb.is_hidden()
            && show_progress
            && (kept.len() + failed.len()) % (batch_size * 20) < chunk.len()
        {
            tracing::info!(
                "encoded {}/{} images",
                kept.len() + failed.len(),
                images.len()
            );
        }
    }
    pb.finish_and_clear();
    if kept.is_empty() {
        return Err(Error::msg("no image could be decoded"));
    }
    let set = FeatureSet {
        images: kept,
        grid: Tensor::cat(&grids, 0)?,
        pooled: Tensor::cat(&pooled, 0)?,
    };
    Ok((set, failed))
}

/// Cache file for these images under this encoder: the name holds a digest of the path list.
pub fn cache_path(cache_dir: &Path, encoder: &str, images: &[PathBuf]) -> PathBuf {
    let joined: Vec<u8> = images
        .iter()
        .flat_map(|p| {
            p.to_string_lossy()
                .into_owned()
                .into_bytes()
                .into_iter()
                .chain([b'\n'])
        })
        .collect();
    cache_dir.join(format!(
        "{encoder}-{}-{}.safetensors",
        images.len(),
        digest(&joined, DigestWidth::Low48)
    ))
}

/// Reads one cache file (features and image list).
fn read_cache(path: &Path) -> Result<FeatureSet> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    let list =
        std::fs::read_to_string(path.with_extension("txt")).map_err(|e| Error::io(path, e))?;
    let get = |k: &str| {
        tensors
            .get(k)
            .cloned()
            .ok_or_else(|| Error::msg(format!("{}: missing tensor {k}", path.display())))
    };
    Ok(FeatureSet {
        images: list.lines().map(PathBuf::from).collect(),
        grid: get("grid")?,
        pooled: get("pooled")?,
    })
}

/// The rows for `images` out of a cache file of this encoder whose list holds them all (e.g.
/// the dev split out of a train + dev cache), if there is one.
fn from_superset(
    cache_dir: &Path,
    encoder: &str,
    images: &[PathBuf],
) -> Result<Option<FeatureSet>> {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return Ok(None);
    };
    let mut lists: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "txt")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{encoder}-")))
                && p.with_extension("safetensors").exists()
        })
        .collect();
    lists.sort();
    for list in lists {
        let Ok(text) = std::fs::read_to_string(&list) else {
            continue;
        };
        let index: HashMap<&str, u32> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (l, i as u32))
            .collect();
        let rows: Option<Vec<u32>> = images
            .iter()
            .map(|p| index.get(p.to_string_lossy().as_ref()).copied())
            .collect();
        let Some(rows) = rows else {
            continue;
        };
        let all = read_cache(&list.with_extension("safetensors"))?;
        let ix = Tensor::new(rows.as_slice(), &Device::Cpu)?;
        return Ok(Some(FeatureSet {
            images: images.to_vec(),
            grid: all.grid.index_select(&ix, 0)?,
            pooled: all.pooled.index_select(&ix, 0)?,
        }));
    }
    Ok(None)
}

/// Loads the cached features for `images` (their own cache file, or the rows of a cache that
/// holds them all), or computes and caches them.
pub fn load_or_extract(
    encoder: &dyn ImageEncoder,
    images: &[PathBuf],
    cache_dir: &Path,
    batch_size: usize,
) -> Result<FeatureSet> {
    let path = cache_path(cache_dir, encoder.name(), images);
    if path.exists() {
        return read_cache(&path);
    }
    if let Some(set) = from_superset(cache_dir, encoder.name(), images)? {
        return Ok(set);
    }
    let (set, failed) = extract(encoder, images, batch_size, true)?;
    for (p, e) in &failed {
        tracing::warn!("skipped {}: {e}", p.display());
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let tensors: HashMap<String, Tensor> = [
        ("grid".to_string(), set.grid.clone()),
        ("pooled".to_string(), set.pooled.clone()),
    ]
    .into();
    candle_core::safetensors::save(&tensors, &path)?;
    let list: String = set
        .images
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    std::fs::write(path.with_extension("txt"), list).map_err(|e| Error::io(&path, e))?;
    Ok(set)
}
