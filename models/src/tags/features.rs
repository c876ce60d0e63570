//! Encoder features computed once per dataset and cached on disk, so training epochs only run
//! the decoders.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

use super::short_digest;
use crate::encoder::{Encoded, ImageEncoder};
use crate::image_prep::load_image;
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
        short_digest(&joined)
    ))
}

/// Loads the cached features for `images`, or computes and caches them.
pub fn load_or_extract(
    encoder: &dyn ImageEncoder,
    images: &[PathBuf],
    cache_dir: &Path,
    batch_size: usize,
) -> Result<FeatureSet> {
    let path = cache_path(cache_dir, encoder.name(), images);
    if path.exists() {
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
        let list =
            std::fs::read_to_string(path.with_extension("txt")).map_err(|e| Error::io(&path, e))?;
        let get = |k: &str| {
            tensors
                .get(k)
                .cloned()
                .ok_or_else(|| Error::msg(format!("{}: missing tensor {k}", path.display())))
        };
        return Ok(FeatureSet {
            images: list.lines().map(PathBuf::from).collect(),
            grid: get("grid")?,
            pooled: get("pooled")?,
        });
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
