//! Dataset arguments shared by training and evaluation, and the cached-feature lookup.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::Device;
use clap::Args;
use hashtale_models::encoder::{load_encoder, EfficientNetLite, LiteVariant};
use hashtale_train::data::harrison::read_harrison;
use hashtale_train::data::tagged_folder::TaggedFolder;
use hashtale_train::data::Sample;
use hashtale_train::tags::features::{load_or_extract, FeatureSet};

#[derive(Args, Clone)]
pub struct DataArgs {
    /// A tagged image folder (labels.tsv, images/, optional splits.tsv) or, with
    /// `--harrison-images`, a HARRISON list directory. Training takes several (`--data A --data
    /// B`): the union of their splits, with one merged vocabulary.
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Image root for the HARRISON layout (switches the reader to HARRISON).
    #[arg(long)]
    pub harrison_images: Option<PathBuf>,
    /// HARRISON: drop posts whose image is missing instead of failing.
    #[arg(long)]
    pub skip_missing_images: bool,
    /// Where encoder features are cached between runs.
    #[arg(long, default_value = "runs/cache")]
    pub cache: PathBuf,
    /// Encoder whose features are used: lite0 or lite2 (a model's own encoder when evaluating
    /// a saved model).
    #[arg(long, default_value = "lite0")]
    pub encoder: String,
    /// Use at most this many images of each folder's train split: an evenly spaced,
    /// deterministic subset (for when encoding every train image does not fit the time).
    #[arg(long)]
    pub train_limit: Option<usize>,
}

impl DataArgs {
    pub fn variant(&self) -> anyhow::Result<LiteVariant> {
        LiteVariant::parse(&self.encoder)
            .with_context(|| format!("--encoder `{}`: expected lite0 or lite2", self.encoder))
    }

    /// The one dataset folder of an evaluation.
    pub fn single(&self) -> anyhow::Result<&PathBuf> {
        match self.data.as_slice() {
            [one] => Ok(one),
            _ => bail!("give exactly one --data folder here"),
        }
    }
}

/// Row indices into the feature set and tag lists of one split.
pub type SplitRows = (Vec<u32>, Vec<Vec<String>>);

/// The split names of a folder (HARRISON: `train` and `dev`).
pub fn split_names(a: &DataArgs, data: &Path) -> anyhow::Result<Vec<String>> {
    if a.harrison_images.is_some() {
        return Ok(vec!["dev".into(), "train".into()]);
    }
    Ok(TaggedFolder::read(data)?.split_names())
}

fn samples_by_split(a: &DataArgs, data: &Path, split: &str) -> anyhow::Result<Vec<Sample>> {
    if let Some(root) = &a.harrison_images {
        let all = read_harrison(data, Some(root), a.skip_missing_images)?;
        // HARRISON ships no split: every 10th post is dev, the rest train.
        return Ok(all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| match split {
                "dev" => i % 10 == 0,
                "train" => i % 10 != 0,
                _ => true,
            })
            .map(|(_, s)| s)
            .collect());
    }
    let folder = TaggedFolder::read(data)?;
    let mut samples = folder.split(split);
    if let (Some(n), "train") = (a.train_limit, split) {
        samples = evenly_spaced(samples, n);
    }
    if samples.is_empty() {
        bail!(
            "{}: split `{split}` is empty (splits here: {}; `all` is every image)",
            data.display(),
            folder.split_names().join(", ")
        );
    }
    Ok(samples)
}

/// The encoder, the features of every `--data` folder's `splits` (cached per folder), and each
/// split's rows over the union of the folders.
pub fn load_split_features(
    a: &DataArgs,
    paths: &hashtale_models::ModelPaths,
    splits: &[&str],
    device: &Device,
) -> anyhow::Result<(EfficientNetLite, FeatureSet, Vec<SplitRows>)> {
    let encoder = load_encoder(a.variant()?, paths, device).context("loading the encoder")?;
    let mut sets = Vec::new();
    let mut per_split: Vec<Vec<Sample>> = vec![Vec::new(); splits.len()];
    for data in &a.data {
        let lists: Vec<Vec<Sample>> = splits
            .iter()
            .map(|s| samples_by_split(a, data, s))
            .collect::<anyhow::Result<_>>()?;
        let mut images: Vec<PathBuf> = lists.iter().flatten().map(|s| s.image.clone()).collect();
        images.sort();
        images.dedup();
        sets.push(load_or_extract(&encoder, &images, &a.cache, 32)?);
        for (all, list) in per_split.iter_mut().zip(lists) {
            all.extend(list);
        }
    }
    let features = FeatureSet::concat(sets)?;
    let index = features.index();
    let rows = per_split
        .iter()
        .map(|samples| {
            samples
                .iter()
                .filter_map(|s| {
                    index
                        .get(s.image.as_path())
                        .map(|&r| (r as u32, s.tags.clone()))
                })
                .unzip()
        })
        .collect();
    Ok((encoder, features, rows))
}

/// At most `n` of `items`, evenly spaced (the first, then every len/n-th), in order.
pub fn evenly_spaced<T: Clone>(items: Vec<T>, n: usize) -> Vec<T> {
    if items.len() <= n {
        return items;
    }
    let step = items.len() as f64 / n as f64;
    (0..n)
        .map(|k| items[(k as f64 * step) as usize].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::evenly_spaced;

    #[test]
    fn evenly_spaced_subsets_are_deterministic_and_spread() {
        let items: Vec<usize> = (0..10).collect();
        assert_eq!(evenly_spaced(items.clone(), 4), vec![0, 2, 5, 7]);
        assert_eq!(evenly_spaced(items.clone(), 20), items);
        assert_eq!(evenly_spaced(items, 0), Vec::<usize>::new());
    }
}
