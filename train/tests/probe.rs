//! The linear-probe hashtag source: training on a synthetic set, its maps, f16 storage, and its
//! place in the fused list. No ../shared needed.
use candle_core::{Device, Tensor};
use hashtale_models::encoder::Encoded;
use hashtale_models::tags::fuse::{fuse_with_probe, Calibration, FusionWeights};
use hashtale_models::tags::probe::{LinearProbe, ProbeConfig, ProbeLoss};
use hashtale_models::tags::ScoredTag;
use hashtale_train::tags::probe::{
    tag_ids, train_mixture, train_probe, ProbeData, ProbePart, ProbeTrainConfig,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const D: usize = 16;
const CELLS: usize = 49;
const TAGS: [&str; 4] = ["beach", "dog", "snow", "water"];

/// Images whose tag `k` lights up feature channels 2k and 2k+1 in some grid cells (ReLU-like
/// non-negative noise elsewhere); tags: the dominant topic, plus `water` with `beach`.
fn synthetic(n: usize, seed: u64) -> (Tensor, Tensor, Vec<Vec<String>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut grid = vec![0f32; n * CELLS * D];
    let mut lists = Vec::new();
    for i in 0..n {
        let topic = rng.gen_range(0..3usize); // beach, dog or snow
        let k = [0usize, 1, 2][topic];
        for c in 0..CELLS {
            let on = c % 7 < 4; // the left part of the grid holds the object
            for d in 0..D {
                let mut v: f32 = rng.gen_range(0.0..0.6);
                if on && (d == 2 * k || d == 2 * k + 1) {
                    v += rng.gen_range(1.0..2.0);
                }
                grid[(i * CELLS + c) * D + d] = v;
            }
        }
        let mut tags = vec![TAGS[k].to_string()];
        if k == 0 {
            tags.push("water".into());
        }
        lists.push(tags);
    }
    let grid = Tensor::from_vec(grid, (n, CELLS, D), &Device::Cpu).unwrap();
    let pooled = grid.mean(1).unwrap();
    (grid, pooled, lists)
}

fn config(loss: ProbeLoss) -> ProbeConfig {
    ProbeConfig {
        encoder: "synthetic".into(),
        loss,
        tags: TAGS.iter().map(|t| t.to_string()).collect(),
        experts: Vec::new(),
        training: serde_json::Value::Null,
    }
}

/// Fast settings for the small synthetic sets (no early stop).
fn train_config(loss: ProbeLoss) -> ProbeTrainConfig {
    ProbeTrainConfig {
        loss,
        epochs: 30,
        batch_size: 32,
        learning_rate: 0.05,
        weight_decay: 1e-4,
        patience: 30,
        seed: 7,
    }
}

fn trained(loss: ProbeLoss) -> (LinearProbe, Tensor, Tensor, Vec<Vec<String>>) {
    let (_, train_x, train_tags) = synthetic(300, 1);
    let (dev_grid, dev_x, dev_tags) = synthetic(60, 2);
    let tags = config(loss).tags;
    let (train_t, dev_t) = (tag_ids(&tags, &train_tags), tag_ids(&tags, &dev_tags));
    let cfg = train_config(loss);
    let (probe, history) = train_probe(
        &cfg,
        config(loss),
        &ProbeData {
            pooled: &train_x,
            targets: &train_t,
        },
        &ProbeData {
            pooled: &dev_x,
            targets: &dev_t,
        },
        &Device::Cpu,
        |_, _| {},
    )
    .unwrap();
    assert!(
        history.last().unwrap().dev_loss < history[0].dev_loss,
        "{history:?}"
    );
    (probe, dev_grid, dev_x, dev_tags)
}

#[test]
fn a_probe_learns_a_synthetic_tagging() {
    for loss in [ProbeLoss::Softmax, ProbeLoss::Bce] {
        let (probe, grid, pooled, truth) = trained(loss);
        let enc = Encoded { grid, pooled };
        let tagged = probe.tag(&enc, 3).unwrap();
        let mut hits = 0;
        for (tags, truth) in tagged.iter().zip(&truth) {
            if truth.contains(&tags[0].tag) {
                hits += 1;
            }
            if truth.len() == 2 {
                // beach photos: both their tags are the top two.
                let top2: Vec<&str> = tags[..2].iter().map(|t| t.tag.as_str()).collect();
                assert!(
                    top2.contains(&"beach") && top2.contains(&"water"),
                    "{loss:?} {top2:?}"
                );
            }
            // The map of the first hashtag lies where its channels are: the left 4 columns.
            let left: f32 = (0..CELLS)
                .filter(|c| c % 7 < 4)
                .map(|c| tags[0].attention[c])
                .sum();
            assert!(left > 0.7, "{loss:?} {}: {left}", tags[0].tag);
        }
        assert_eq!(hits, truth.len(), "{loss:?}: P@1 {hits}/{}", truth.len());
    }
}

#[test]
fn an_untrained_probe_does_not_tag_the_synthetic_set() {
    // The check above can fail: a zero layer ranks by name only, so the first hashtag is
    // `beach` for every photo, right for about a third of them.
    let (_, grid, pooled, truth) = trained(ProbeLoss::Softmax);
    let zero = LinearProbe::new(
        config(ProbeLoss::Softmax),
        Tensor::zeros((TAGS.len(), D), candle_core::DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros(TAGS.len(), candle_core::DType::F32, &Device::Cpu).unwrap(),
    )
    .unwrap();
    let tagged = zero.tag(&Encoded { grid, pooled }, 3).unwrap();
    let hits = tagged
        .iter()
        .zip(&truth)
        .filter(|(t, truth)| truth.contains(&t[0].tag))
        .count();
    assert!(hits < truth.len() * 2 / 3, "{hits}");
}

#[test]
fn f16_storage_keeps_the_ranking() {
    let (probe, grid, pooled, _) = trained(ProbeLoss::Softmax);
    let dir = tempfile::tempdir().unwrap();
    probe.save(dir.path(), true).unwrap();
    assert!(LinearProbe::exists(dir.path()));
    let loaded = LinearProbe::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.config.tags, probe.config.tags);
    let enc = Encoded { grid, pooled };
    let (a, b) = (probe.tag(&enc, 4).unwrap(), loaded.tag(&enc, 4).unwrap());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x[0].tag, y[0].tag);
        assert!((x[0].score - y[0].score).abs() < 1e-2);
    }
    // The rounded copy is what the loaded file holds.
    let rounded = probe.rounded_to_f16().unwrap().tag(&enc, 4).unwrap();
    assert_eq!(rounded, b);
}

#[test]
fn the_probe_in_the_fused_list_stays_unique_deterministic_and_mapped() {
    let (probe, grid, pooled, _) = trained(ProbeLoss::Softmax);
    let enc = Encoded { grid, pooled };
    let probe_lists = probe.tag(&enc, 4).unwrap();
    let map = |i: usize| {
        let mut v = vec![0.0f32; CELLS];
        v[i] = 1.0;
        v
    };
    let tag = |t: &str, s: f32, m: Vec<f32>| ScoredTag {
        tag: t.into(),
        score: s,
        attention: m,
    };
    // The decoder says some of the same words (and one map-less tag); the concepts others.
    let decoder = vec![tag("dog", 0.5, map(3)), tag("water", 0.3, vec![])];
    let concepts = vec![tag("beach", 0.7, map(30)), tag("seashore", 0.6, map(31))];
    let weights = FusionWeights {
        decoder: Calibration {
            bias: -0.5,
            score: 0.7,
            concept_top: -0.2,
            decoder_top: 0.2,
            probe_top: 0.1,
            object_photo: -0.4,
        },
        concepts: Calibration {
            bias: -0.8,
            score: 0.9,
            concept_top: 0.2,
            decoder_top: -0.2,
            probe_top: -0.3,
            object_photo: 0.6,
        },
        probe: Some(Calibration {
            bias: 0.2,
            score: 1.0,
            concept_top: -0.1,
            decoder_top: 0.0,
            probe_top: 0.3,
            object_photo: -0.2,
        }),
        gate: None,
        fitted_on: serde_json::Value::Null,
    };
    for p in &probe_lists {
        let fused = fuse_with_probe(&decoder, &concepts, p, 0.7, &weights, 10, CELLS);
        assert_eq!(
            fused,
            fuse_with_probe(&decoder, &concepts, p, 0.7, &weights, 10, CELLS)
        );
        let mut names: Vec<&str> = fused.iter().map(|t| t.tag.as_str()).collect();
        assert_eq!(
            names.len(),
            5,
            "dog, water, beach, seashore, snow: {names:?}"
        );
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 5);
        for t in &fused {
            assert_eq!(t.attention.len(), CELLS, "{}", t.tag);
            let sum: f32 = t.attention.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "{}: {sum}", t.tag);
            assert!(t.attention.iter().all(|v| *v >= 0.0));
        }
        for pair in fused.windows(2) {
            assert!(
                pair[0].score > pair[1].score
                    || (pair[0].score == pair[1].score && pair[0].tag < pair[1].tag)
            );
        }
    }
}

/// Two labelled folders of the same kinds of photos with different conventions: folder 0 tags
/// a beach photo `beach water`, folder 1 only `water`. Each folder's photos carry a marker
/// channel (14 or 15) that the router can read.
fn folder(n: usize, seed: u64, which: usize) -> (Tensor, Tensor, Vec<Vec<String>>) {
    let (grid, _, mut lists) = synthetic(n, seed);
    let mut marker = vec![0f32; n * CELLS * D];
    for cell in marker.chunks_mut(D) {
        cell[14 + which] = 1.5;
    }
    let marker = Tensor::from_vec(marker, (n, CELLS, D), &Device::Cpu).unwrap();
    let grid = (grid + marker).unwrap();
    if which == 1 {
        for l in &mut lists {
            l.retain(|t| t != "beach");
            if l.is_empty() {
                l.push("water".into());
            }
        }
    }
    let pooled = grid.mean(1).unwrap();
    (grid, pooled, lists)
}

#[test]
fn a_mixture_routes_each_folder_to_its_own_labelling_and_round_trips() {
    let tags = config(ProbeLoss::Bce).tags;
    let cfg = train_config(ProbeLoss::Bce);
    let sets: Vec<_> = (0..2)
        .map(|k| {
            let (_, train_x, train_tags) = folder(200, 10 + k as u64, k);
            let (dev_grid, dev_x, dev_tags) = folder(40, 20 + k as u64, k);
            let (train_t, dev_t) = (tag_ids(&tags, &train_tags), tag_ids(&tags, &dev_tags));
            (train_x, train_t, dev_grid, dev_x, dev_t, dev_tags)
        })
        .collect();
    let parts: Vec<ProbePart> = sets
        .iter()
        .enumerate()
        .map(|(k, s)| ProbePart {
            name: format!("folder{k}"),
            train: ProbeData {
                pooled: &s.0,
                targets: &s.1,
            },
            dev: ProbeData {
                pooled: &s.3,
                targets: &s.4,
            },
        })
        .collect();
    let mut seen = Vec::new();
    let (probe, history) = train_mixture(
        &cfg,
        &ProbeTrainConfig {
            loss: ProbeLoss::Softmax,
            ..cfg.clone()
        },
        config(ProbeLoss::Bce),
        &parts,
        &Device::Cpu,
        |name, e, _| seen.push((name.to_string(), e.epoch)),
    )
    .unwrap();
    assert!(probe.is_mixture());
    assert_eq!(probe.config.experts, ["folder0", "folder1"]);
    assert_eq!(history.experts.len(), 2);
    assert!(seen.iter().any(|(n, _)| n == "router"), "{seen:?}");

    let dir = tempfile::tempdir().unwrap();
    probe.save(dir.path(), true).unwrap();
    let loaded = LinearProbe::load(dir.path(), &Device::Cpu).unwrap();
    assert!(loaded.is_mixture());
    for (k, s) in sets.iter().enumerate() {
        let enc = Encoded {
            grid: s.2.clone(),
            pooled: s.3.clone(),
        };
        // The router sends each folder's photos to its own expert.
        let pi = probe.routing(&enc.pooled).unwrap().unwrap();
        let pi = pi.to_vec2::<f32>().unwrap();
        assert!(pi.iter().all(|row| row[k] > 0.9), "folder {k}: {pi:?}");
        let tagged = probe.tag(&enc, 4).unwrap();
        let from_file = loaded.tag(&enc, 4).unwrap();
        for ((tags, truth), back) in tagged.iter().zip(&s.5).zip(&from_file) {
            assert!(
                truth.contains(&tags[0].tag),
                "folder {k}: {tags:?} for {truth:?}"
            );
            assert_eq!(tags[0].tag, back[0].tag);
            assert!((tags[0].score - back[0].score).abs() < 1e-2);
            let beach = tags
                .iter()
                .find(|t| t.tag == "beach")
                .map_or(0.0, |t| t.score);
            if truth.contains(&"water".to_string()) {
                // Folder 0 says `beach` on its beach photos, folder 1 never does.
                if k == 0 {
                    assert!(beach > 0.5, "{tags:?}");
                } else {
                    assert!(beach < 0.5, "{tags:?}");
                }
            }
            for t in tags {
                let sum: f32 = t.attention.iter().sum();
                assert_eq!(t.attention.len(), CELLS);
                assert!((sum - 1.0).abs() < 1e-4, "{}: {sum}", t.tag);
            }
        }
    }
}
