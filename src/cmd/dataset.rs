//! Dataset arguments shared by training and evaluation, and the cached-feature lookup.
use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::Device;
use clap::Args;
use hashtale_models::data::harrison::read_harrison;
use hashtale_models::data::tagged_folder::TaggedFolder;
use hashtale_models::data::Sample;
use hashtale_models::encoder::{default_encoder_path, EfficientNetLite0};
use hashtale_models::tags::features::{load_or_extract, FeatureSet};

#[derive(Args, Clone)]
pub struct DataArgs {
    /// A tagged image folder (labels.tsv, images/, optional splits.tsv) or, with
    /// `--harrison-images`, a HARRISON list directory.
    #[arg(long)]
    pub data: PathBuf,
    /// Image root for the HARRISON layout (switches the reader to HARRISON).
    #[arg(long)]
    pub harrison_images: Option<PathBuf>,
    /// HARRISON: drop posts whose image is missing instead of failing.
    #[arg(long)]
    pub skip_missing_images: bool,
    /// Where encoder features are cached between runs.
    #[arg(long, default_value = "runs/cache")]
    pub cache: PathBuf,
}

/// Row indices into the feature set and tag lists of one split.
pub type SplitRows = (Vec<u32>, Vec<Vec<String>>);

fn samples_by_split(a: &DataArgs, split: &str) -> anyhow::Result<Vec<Sample>> {
    if let Some(root) = &a.harrison_images {
        let all = read_harrison(&a.data, Some(root), a.skip_missing_images)?;
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
    let folder = TaggedFolder::read(&a.data)?;
    let samples = folder.split(split);
    if samples.is_empty() {
        bail!(
            "{}: split `{split}` is empty (splits here: {})",
            a.data.display(),
            folder.split_names().join(", ")
        );
    }
    Ok(samples)
}

/// Encoder features for the images of `splits` (cached), and each split's rows.
pub fn load_split_features(
    a: &DataArgs,
    splits: &[&str],
    device: &Device,
) -> anyhow::Result<(FeatureSet, SplitRows, SplitRows)> {
    let lists: Vec<Vec<Sample>> = splits
        .iter()
        .map(|s| samples_by_split(a, s))
        .collect::<anyhow::Result<_>>()?;
    let mut images: Vec<PathBuf> = lists.iter().flatten().map(|s| s.image.clone()).collect();
    images.sort();
    images.dedup();
    let encoder =
        EfficientNetLite0::load(&default_encoder_path(), device).context("loading the encoder")?;
    let features = load_or_extract(&encoder, &images, &a.cache, 32)?;
    let index = features.index();
    let rows = |samples: &Vec<Sample>| -> SplitRows {
        samples
            .iter()
            .filter_map(|s| {
                index
                    .get(s.image.as_path())
                    .map(|&r| (r as u32, s.tags.clone()))
            })
            .unzip()
    };
    let first = rows(&lists[0]);
    let second = lists.get(1).map(rows).unwrap_or_default();
    Ok((features, first, second))
}
