//! The shipped EfficientNet-Lite0 weights, run by our candle port, must recognise the shipped
//! sample photos: a wrong padding, stride, epsilon or weight layout breaks these.
use candle_core::{Device, D};
use hashtale_models::encoder::{
    default_encoder_path, imagenet_classes, EfficientNetLite0, ImageEncoder,
};
use hashtale_models::image_prep::load_image;

fn top1(encoder: &EfficientNetLite0, classes: &[String], file: &str) -> (String, f32) {
    let path = hashtale_models::encoder::assets_dir()
        .join("samples")
        .join(file);
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

#[test]
fn imagenet_top1_on_the_sample_photos() {
    let encoder = EfficientNetLite0::load(&default_encoder_path(), &Device::Cpu).unwrap();
    let classes = imagenet_classes().unwrap();
    assert_eq!(classes.len(), 1000);
    let (cat, p) = top1(&encoder, &classes, "chelsea.png");
    assert!(
        ["tabby", "tiger cat", "Egyptian cat"].contains(&cat.as_str()),
        "chelsea → {cat} ({p})"
    );
    let (cup, p) = top1(&encoder, &classes, "coffee.png");
    assert_eq!(cup, "espresso", "coffee → {cup} ({p})");
}
