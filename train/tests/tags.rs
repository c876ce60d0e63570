//! Hashtag decoders: gradients, overfitting a tiny set, batched beam search.
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use hashtale_models::encoder::Encoded;
use hashtale_models::tags::{beam_search, BeamOptions, DecoderDims, ModelKind, TagNet, Vocab};
use hashtale_train::tags::features::FeatureSet;
use hashtale_train::tags::train::{batch_loss, train, Split, TrainConfig};

fn dims(vocab: usize) -> DecoderDims {
    DecoderDims {
        vocab,
        feature: 16,
        embed: 8,
        hidden: 12,
        attention: 10,
        dropout: 0.0,
    }
}

fn encoded(b: usize, seed: f64) -> Encoded {
    // Deterministic, distinct features per image.
    let grid = Tensor::arange(0f32, (b * 9 * 16) as f32, &Device::Cpu)
        .unwrap()
        .affine(0.37, seed)
        .unwrap()
        .sin()
        .unwrap()
        .reshape((b, 9, 16))
        .unwrap();
    let pooled = grid.mean(1).unwrap();
    Encoded { grid, pooled }
}

/// The fixtures have one- and two-tag images.
fn short_lists() -> BeamOptions {
    BeamOptions {
        min_tags: 1,
        ..BeamOptions::default()
    }
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn gradients_reach_every_parameter() {
    let vocab = Vocab::from_tags(tags(&["dog", "beach", "ball", "sky"]));
    for kind in [
        ModelKind::Attention,
        ModelKind::ShowTell,
        ModelKind::MultiLabel,
    ] {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net = TagNet::new(kind, &dims(vocab.len()), vb).unwrap();
        let cfg = TrainConfig {
            kind,
            hidden: 12,
            ..TrainConfig::default()
        };
        let enc = encoded(3, 0.1);
        let t = [
            tags(&["dog", "ball"]),
            tags(&["sky"]),
            tags(&["beach", "dog", "sky"]),
        ];
        let refs: Vec<&Vec<String>> = t.iter().collect();
        let (loss, _, _) = batch_loss(&net, &vocab, &cfg, &enc, &refs, None).unwrap();
        let grads = loss.backward().unwrap();
        let data = vm.data().lock().unwrap();
        assert!(!data.is_empty());
        for (name, var) in data.iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{kind:?}: no gradient for {name}"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{kind:?}: zero gradient for {name}");
        }
    }
}

fn tiny_dataset() -> (FeatureSet, Vec<Vec<String>>) {
    let enc = encoded(4, 0.3);
    let features = FeatureSet {
        images: (0..4).map(|i| format!("img{i}.jpg").into()).collect(),
        grid: enc.grid.to_dtype(DType::F16).unwrap(),
        pooled: enc.pooled,
    };
    let t = vec![
        tags(&["dog", "ball", "grass"]),
        tags(&["beach", "sea"]),
        tags(&["sky"]),
        tags(&["dog", "sea", "sky", "ball"]),
    ];
    (features, t)
}

#[test]
fn attention_decoder_overfits_a_tiny_set() {
    let (features, t) = tiny_dataset();
    let vocab = Vocab::build(t.iter(), 1);
    let cfg = TrainConfig {
        kind: ModelKind::Attention,
        epochs: 150,
        batch_size: 4,
        learning_rate: 1e-2,
        attention_penalty: 0.0,
        patience: 1000,
        embed: 16,
        hidden: 32,
        attention: 16,
        dropout: 0.0,
        ..TrainConfig::default()
    };
    let split = Split {
        features: &features,
        rows: vec![0, 1, 2, 3],
        tags: t.clone(),
    };
    let dev = Split {
        features: &features,
        rows: vec![0, 1, 2, 3],
        tags: t.clone(),
    };
    let trained = train(&cfg, &vocab, &split, &dev, &Device::Cpu, false, None).unwrap();
    let last = trained.history.last().unwrap();
    assert!(last.train_loss < 0.05, "train loss {}", last.train_loss);
    let model = trained.into_model(&Device::Cpu).unwrap();
    let enc = features.batch(&[0, 1, 2, 3], &Device::Cpu).unwrap();
    let preds = model.predict(&enc, short_lists()).unwrap();
    for (p, want) in preds.iter().zip(&t) {
        let got: Vec<String> = p.tags.iter().map(|x| x.tag.clone()).collect();
        assert_eq!(&got, want);
        for tag in &p.tags {
            assert_eq!(tag.attention.len(), 9);
            let s: f32 = tag.attention.iter().sum();
            assert!((s - 1.0).abs() < 1e-4);
        }
    }
}

#[test]
fn batched_beam_search_equals_one_image_at_a_time() {
    let vocab_size = 30;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let net = TagNet::new(ModelKind::Attention, &dims(vocab_size), vb).unwrap();
    let TagNet::Attention(model) = &net else {
        unreachable!()
    };
    let enc = encoded(5, 0.7);
    let opts = BeamOptions {
        beam_size: 4,
        max_tags: 6,
        min_tags: 1,
    };
    let batched = beam_search(model, &enc, opts).unwrap();
    assert_eq!(batched.len(), 5);
    for (i, b) in batched.iter().enumerate() {
        let one = Encoded {
            grid: enc.grid.narrow(0, i, 1).unwrap(),
            pooled: enc.pooled.narrow(0, i, 1).unwrap(),
        };
        let single = beam_search(model, &one, opts).unwrap().remove(0);
        let ids =
            |d: &hashtale_models::tags::Decoded| d.tags.iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(ids(b), ids(&single), "image {i}");
        assert!((b.log_prob - single.log_prob).abs() < 1e-4);
        assert!(b.tags.len() <= 6);
        let mut seen = ids(b);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), b.tags.len(), "no repeated hashtag");
    }
}

#[test]
fn save_and_load_round_trip_gives_the_same_tags() {
    let (features, t) = tiny_dataset();
    let vocab = Vocab::build(t.iter(), 1);
    let cfg = TrainConfig {
        kind: ModelKind::ShowTell,
        epochs: 3,
        batch_size: 2,
        embed: 8,
        hidden: 12,
        attention: 10,
        ..TrainConfig::default()
    };
    let split = Split {
        features: &features,
        rows: vec![0, 1, 2, 3],
        tags: t.clone(),
    };
    let trained = train(&cfg, &vocab, &split, &split, &Device::Cpu, false, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    hashtale_models::tags::TagModel::save(dir.path(), &trained.config, &trained.varmap, false)
        .unwrap();
    let loaded = hashtale_models::tags::TagModel::load(dir.path(), &Device::Cpu).unwrap();
    let original = trained.into_model(&Device::Cpu).unwrap();
    let enc = features.batch(&[0, 1, 2, 3], &Device::Cpu).unwrap();
    let a = original.predict(&enc, short_lists()).unwrap();
    let b = loaded.predict(&enc, short_lists()).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.tags, y.tags);
    }
    assert!(loaded.version().starts_with("show-tell-"));
}
