//! The product's hashtag list on the shipped samples: the attention decoder fused with the
//! concept hashtags of the encoder's ImageNet head.
mod support;

use hashtale_models::device::best_device;
use hashtale_models::image_prep::load_image;
use hashtale_models::pipeline::{Hashtale, LoadOptions, ModelInput, TagSource};

/// The samples at full size, as `hashtale tag` reads them before preparing.
fn samples() -> Vec<(String, ModelInput)> {
    ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"]
        .iter()
        .map(|f| {
            let path = support::assets().join("samples").join(f);
            let img = load_image(&path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            (f.to_string(), ModelInput::new(img, &bytes))
        })
        .collect()
}

fn model(source: TagSource) -> Hashtale {
    let mut m = Hashtale::load(
        &best_device(),
        &LoadOptions {
            paths: support::shipped(),
            story: false,
            expand: false,
            concepts: true,
        },
    )
    .unwrap();
    m.options.source = source;
    m
}

#[test]
fn fused_lists_are_unique_deterministic_and_mapped() {
    let m = model(TagSource::Fused);
    let (names, images): (Vec<String>, Vec<_>) = samples().into_iter().unzip();
    let first = m.run_batch(&images).unwrap();
    let again = m.run_batch(&images).unwrap();
    assert_eq!(first, again, "the same photos give the same hashtags");
    // Prepared beforehand (the worker's decode task) or squashed in the step: the same result.
    let prepared: Vec<ModelInput> = images
        .iter()
        .map(|i| ModelInput {
            image: m.prepare(i.image.clone()),
            story_stream: i.story_stream,
        })
        .collect();
    assert_eq!(m.run_batch(&prepared).unwrap(), first);
    for (name, r) in names.iter().zip(&first) {
        assert!(r.hashtags.len() >= 3, "{name}: {:?}", r.hashtags);
        let mut tags: Vec<&str> = r.hashtags.iter().map(|t| t.tag.as_str()).collect();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), r.hashtags.len(), "{name}: duplicates");
        for pair in r.hashtags.windows(2) {
            assert!(pair[0].score >= pair[1].score, "{name}: ranked");
        }
        for t in &r.hashtags {
            assert_eq!(t.attention.len(), 49, "{name} #{}", t.tag);
            let sum: f32 = t.attention.iter().sum();
            assert!(
                (sum - 1.0).abs() < 1e-3,
                "{name} #{}: map sums to {sum}",
                t.tag
            );
            assert!((0.0..=1.0).contains(&t.score));
        }
    }
    // One at a time gives the same lists as the batch (scores up to float rounding, which
    // depends on the matmul's blocking for the batch size).
    let alone = m.run_batch(&images[1..2]).unwrap();
    let tags = |r: &hashtale_models::pipeline::ImageResult| -> Vec<String> {
        r.hashtags.iter().map(|t| t.tag.clone()).collect()
    };
    assert_eq!(tags(&alone[0]), tags(&first[1]));
    for (a, b) in alone[0].hashtags.iter().zip(&first[1].hashtags) {
        assert!((a.score - b.score).abs() < 1e-4, "#{}", a.tag);
    }
}

#[test]
fn the_first_hashtag_names_the_cat_and_the_coffee() {
    let m = model(TagSource::Fused);
    let (names, images): (Vec<String>, Vec<_>) = samples().into_iter().unzip();
    let results = m.run_batch(&images).unwrap();
    let first = |name: &str| {
        let i = names.iter().position(|n| n == name).unwrap();
        results[i].hashtags[0].tag.clone()
    };
    assert_eq!(first("chelsea.png"), "cat");
    let coffee = first("coffee.png");
    assert!(
        ["coffee", "espresso", "cup"].contains(&coffee.as_str()),
        "coffee.png → #{coffee}"
    );
    // The decoder alone, trained on photos of people and dogs, does not know the cat.
    let decoder = model(TagSource::Decoder).run_batch(&images[..1]).unwrap();
    assert!(decoder[0].hashtags.iter().all(|t| t.attention.len() == 49));
}
