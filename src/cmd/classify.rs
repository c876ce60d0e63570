//! `hashtale classify`: the encoder's own ImageNet prediction, to check the pretrained weights.
use std::path::PathBuf;

use anyhow::Context;
use candle_core::{Device, D};
use clap::Args;
use hashtale_models::encoder::{imagenet_classes, load_encoder, ImageEncoder, LiteVariant};

#[derive(Args)]
pub struct ClassifyArgs {
    /// Image files.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Encoder: lite0 (the default) or lite2.
    #[arg(long, default_value = "lite0")]
    pub encoder: String,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
}

pub fn run(a: ClassifyArgs) -> anyhow::Result<()> {
    let device = Device::Cpu;
    let variant = LiteVariant::parse(&a.encoder).context("--encoder: lite0 or lite2")?;
    let cfg = super::models::offline_config()?;
    let paths = super::models::resolve(&cfg.models);
    let limits = cfg.fetch.decode_limits();
    let encoder = load_encoder(variant, &paths, &device).context("loading the encoder")?;
    let classes = imagenet_classes(&paths)?;
    for path in &a.images {
        let img = hashtale_fetch::load_image(path, &limits)?;
        let enc = encoder.encode_images(&[img])?;
        let probs = candle_nn::ops::softmax(&encoder.classify(&enc.pooled)?, D::Minus1)?;
        let probs = probs.squeeze(0)?.to_vec1::<f32>()?;
        let mut idx: Vec<usize> = (0..probs.len()).collect();
        idx.sort_by(|&x, &y| probs[y].total_cmp(&probs[x]));
        println!("{}", path.display());
        for &i in idx.iter().take(a.top) {
            println!("  {:>6.2}%  {}", probs[i] * 100.0, classes[i]);
        }
    }
    Ok(())
}
