//! The shipped EfficientNet-Lite weights, run by our candle port, must recognise the shipped
//! sample photos: a wrong padding, stride, epsilon or weight layout breaks these.
mod support;

use candle_core::{Device, D};
use hashtale_models::encoder::{
    imagenet_classes, load_encoder, EfficientNetLite, ImageEncoder, LiteVariant,
};
use hashtale_models::image_prep::load_image;

fn top1(encoder: &EfficientNetLite, classes: &[String], file: &str) -> (String, f32) {
    let path = support::assets().join("samples").join(file);
    let img = load_image(&path).unwrap();
    let enc = encoder.encode_images(&[img]).unwrap();
    assert_eq!(
        enc.grid.dims(),
        &[1, 49, 1280],
        "7×7 grid of 1280-d annotations"
    );
    assert_eq!(enc.pooled.dims(), &[1, 1280]);
    let probs = candle_nn::ops::softmax(&encoder.classify(&enc.pooled).unwrap(), D::Minus1)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let (i, p) = probs
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap();
    (classes[i].clone(), *p)
}

fn check(variant: LiteVariant) {
    let encoder = load_encoder(variant, &support::shipped(), &Device::Cpu).unwrap();
    assert_eq!(encoder.name(), variant.name());
    let classes = imagenet_classes(&support::shipped()).unwrap();
    assert_eq!(classes.len(), 1000);
    let (cat, p) = top1(&encoder, &classes, "chelsea.png");
    assert!(
        ["tabby", "tiger cat", "Egyptian cat"].contains(&cat.as_str()),
        "{variant:?}: chelsea → {cat} ({p})"
    );
    let (cup, p) = top1(&encoder, &classes, "coffee.png");
    assert_eq!(cup, "espresso", "{variant:?}: coffee → {cup} ({p})");
}

#[test]
fn lite0_imagenet_top1_on_the_sample_photos() {
    check(LiteVariant::Lite0);
}

/// Lite2 runs at 260×260 (a 9×9 grid, pooled to 7×7 for the decoders); its 21 blocks and stage
/// strides are read from the checkpoint.
#[test]
fn lite2_imagenet_top1_on_the_sample_photos() {
    check(LiteVariant::Lite2);
}
