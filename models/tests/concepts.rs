//! Concept hashtags from the encoder's ImageNet head: the shipped class → hashtag table, and
//! class activation maps that point at the object.
mod support;

use candle_core::Device;
use hashtale_models::encoder::{imagenet_classes, load_encoder, ImageEncoder, LiteVariant};
use hashtale_models::image_prep::load_image;
use hashtale_models::tags::concepts::{class_map, ConceptOptions, ConceptTable, ConceptTagger};
use image::{DynamicImage, GenericImage, Rgb, RgbImage};

fn table() -> ConceptTable {
    ConceptTable::load(&support::shipped().concepts)
        .expect("assets/concepts/concepts.tsv is shipped")
}

fn class(name: &str) -> usize {
    imagenet_classes(&support::shipped())
        .unwrap()
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no class {name}"))
}

#[test]
fn the_table_names_classes_as_people_tag_them() {
    let t = table();
    assert_eq!(t.classes.len(), 1000);
    let names = imagenet_classes(&support::shipped()).unwrap();
    for (i, c) in t.classes.iter().enumerate() {
        assert_eq!(c.name, names[i], "class {i} is in the encoder's order");
        assert!(!c.tags.is_empty(), "class {i} has a hashtag");
    }
    // Sorted WordNet ids: class 0 is the tench, n01440764.
    assert_eq!(t.classes[0].wnid, "n01440764");
    let expect = [
        ("tabby", &["tabby", "cat"][..]),
        ("Egyptian cat", &["egyptiancat", "cat"]),
        ("espresso", &["espresso", "coffee"]),
        ("sports car", &["sportscar", "car"]),
        ("golden retriever", &["goldenretriever", "dog"]),
        ("pizza", &["pizza"]),
    ];
    for (name, tags) in expect {
        let got = t.hashtags(class(name));
        for tag in tags {
            assert!(got.contains(tag), "{name}: {got:?} lacks {tag}");
        }
    }
    // Taxonomic and vague words never become hashtags.
    for c in &t.classes {
        for (tag, _) in &c.tags {
            assert!(
                ![
                    "felid",
                    "placental",
                    "chordate",
                    "mammal",
                    "animal",
                    "artifact",
                    "device"
                ]
                .contains(&tag.as_str()),
                "{}: #{tag}",
                c.name
            );
        }
    }
}

/// A gray canvas with the cat photo in its top-left quarter: the cat classes' activation map
/// must put most of its weight there, and the concept hashtag `#cat` leads.
#[test]
fn class_activation_map_peaks_where_the_object_is() {
    let encoder = load_encoder(LiteVariant::Lite0, &support::shipped(), &Device::Cpu).unwrap();
    let cat = load_image(&support::assets().join("samples/chelsea.png"))
        .unwrap()
        .resize_exact(112, 112, image::imageops::FilterType::Triangle)
        .to_rgb8();
    let mut canvas = RgbImage::from_pixel(224, 224, Rgb([128, 128, 128]));
    canvas.copy_from(&cat, 0, 0).unwrap();
    let enc = encoder
        .encode_images(&[DynamicImage::ImageRgb8(canvas)])
        .unwrap();
    let (w, b) = encoder.classifier_parts();
    let tagger = ConceptTagger::new(table(), w, b).unwrap();
    let cams = enc
        .grid
        .broadcast_matmul(&w.t().unwrap())
        .unwrap()
        .to_vec3::<f32>()
        .unwrap()
        .remove(0);
    let probs = tagger
        .class_probs(&enc)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
        .remove(0);
    let top = (0..probs.len())
        .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
        .unwrap();
    let name = &tagger.table().classes[top].name;
    assert!(
        ["tabby", "tiger cat", "Egyptian cat"].contains(&name.as_str()),
        "top class {name}"
    );
    let map = class_map(&cams, top);
    assert_eq!(map.len(), 49);
    let in_quarter: f32 = (0..49)
        .filter(|i| i / 7 < 4 && i % 7 < 4)
        .map(|i| map[i])
        .sum();
    // The quarter (with the border row and column the 7×7 grid shares) holds 16 of 49 cells.
    assert!(in_quarter > 0.7, "{in_quarter:.2} of the map on the cat");
    let peak = (0..49).max_by(|&a, &b| map[a].total_cmp(&map[b])).unwrap();
    assert!(peak / 7 < 4 && peak % 7 < 4, "peak at cell {peak}");

    let tags = tagger
        .tag(&enc, ConceptOptions::default())
        .unwrap()
        .remove(0);
    assert_eq!(tags[0].tag, "cat", "{tags:?}");
    let sum: f32 = tags[0].attention.iter().sum();
    assert!((sum - 1.0).abs() < 1e-4);
}
