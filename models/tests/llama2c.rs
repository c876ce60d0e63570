//! llama2.c-format story models: the checkpoint reader (fewer key/value heads than query heads
//! included), the tokenizer's file format and batched generation, on tiny random checkpoints
//! written here in the same format.
use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_transformers::models::llama2_c::Config;
use hashtale_models::story::llama2c::{read_checkpoint, tensor_shapes, write_checkpoint};
use hashtale_models::story::llama_tokenizer::BOS;
use hashtale_models::story::{GenerateOptions, Llama2cStoryModel, LlamaTokenizer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn tiny_config(n_heads: usize, n_kv_heads: usize, vocab: usize) -> Config {
    Config {
        dim: 32,
        hidden_dim: 64,
        n_layers: 2,
        n_heads,
        n_kv_heads,
        vocab_size: vocab,
        seq_len: 96,
        norm_eps: 1e-5,
    }
}

/// Random weights of the right shapes; RMS weights near 1 and the RoPE tables as llama2.c
/// computes them, so the model behaves like a real (untrained) one.
fn random_tensors(cfg: &Config, shared: bool, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let head = cfg.dim / cfg.n_heads;
    let mut out = HashMap::new();
    for (name, shape) in tensor_shapes(cfg, shared) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match name {
            "freq_real" | "freq_imag" => (0..cfg.seq_len)
                .flat_map(|p| {
                    (0..head / 2).map(move |i| {
                        let f = p as f32 / 10000f32.powf(2.0 * i as f32 / head as f32);
                        if name == "freq_real" {
                            f.cos()
                        } else {
                            f.sin()
                        }
                    })
                })
                .collect(),
            n if n.starts_with("rms") => (0..shape.iter().product::<usize>())
                .map(|_| 1.0 + rng.gen_range(-0.1..0.1))
                .collect(),
            _ => (0..n).map(|_| rng.gen_range(-0.3..0.3)).collect(),
        };
        out.insert(
            name.to_string(),
            Tensor::from_vec(data, shape.as_slice(), &Device::Cpu).unwrap(),
        );
    }
    out
}

/// Specials, the 256 byte pieces, and letters plus a few merges.
fn tiny_tokenizer_bytes() -> (Vec<u8>, usize) {
    let mut pieces: Vec<(Vec<u8>, f32)> = vec![
        (b"<unk>".to_vec(), 0.0),
        (b"\n<s>\n".to_vec(), 0.0),
        (b"\n</s>\n".to_vec(), 0.0),
    ];
    for b in 0..=255u8 {
        pieces.push((format!("<0x{b:02X}>").into_bytes(), 0.0));
    }
    for c in " abcdefghijklmnopqrstuvwxyz.,".chars() {
        pieces.push((c.to_string().into_bytes(), -20.0));
    }
    for (i, m) in [" d", "og", " dog", " the", "th", "he", " t"]
        .iter()
        .enumerate()
    {
        pieces.push((m.as_bytes().to_vec(), -(i as f32)));
    }
    let n = pieces.len();
    (LlamaTokenizer::to_bytes(&pieces), n)
}

fn tiny_model(n_heads: usize, n_kv_heads: usize, shared: bool, seed: u64) -> Llama2cStoryModel {
    let (tok_bytes, vocab) = tiny_tokenizer_bytes();
    let cfg = tiny_config(n_heads, n_kv_heads, vocab);
    let bytes = write_checkpoint(&cfg, shared, &random_tensors(&cfg, shared, seed)).unwrap();
    let tok = LlamaTokenizer::from_bytes(&tok_bytes, vocab).unwrap();
    Llama2cStoryModel::from_bytes(&bytes, tok, "story-llama2c-tiny".into(), &Device::Cpu).unwrap()
}

#[test]
fn a_written_checkpoint_reads_back_tensor_for_tensor() {
    let (_, vocab) = tiny_tokenizer_bytes();
    for shared in [true, false] {
        let cfg = tiny_config(4, 2, vocab);
        let tensors = random_tensors(&cfg, shared, 1);
        let bytes = write_checkpoint(&cfg, shared, &tensors).unwrap();
        let (read, vb) = read_checkpoint(&bytes, &Device::Cpu).unwrap();
        assert_eq!(read.n_kv_heads, 2);
        assert_eq!(read.vocab_size, vocab);
        let same = |a: &Tensor, b: &Tensor| {
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            d.to_scalar::<f32>().unwrap() == 0.0
        };
        let wk = vb
            .get((16, 32), "model.layers.1.self_attn.k_proj.weight")
            .unwrap();
        let want = tensors["wk"].get(1).unwrap();
        assert!(same(&wk, &want), "layer 1's wk differs");
        let head = vb.get((vocab, 32), "lm_head.weight").unwrap();
        let want = if shared {
            &tensors["embed"]
        } else {
            &tensors["wcls"]
        };
        assert!(same(&head, want), "classifier (shared {shared}) differs");
        // A truncated file is refused before anything is read.
        assert!(read_checkpoint(&bytes[..bytes.len() - 4], &Device::Cpu).is_err());
    }
}

#[test]
fn the_host_decoder_matches_candles_llama() {
    for (heads, kv, shared) in [(4, 4, true), (4, 2, false), (4, 1, true)] {
        let model = tiny_model(heads, kv, shared, 11);
        let ids = model
            .tokenizer()
            .encode("the dog sat on the mat, the end.", true);
        let host = model.host_logits(&ids);
        let reference = model.candle_logits(&ids).unwrap();
        assert_eq!(host.len(), reference.len());
        for (p, (a, b)) in host.iter().zip(&reference).enumerate() {
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-3,
                "heads {heads}/{kv}, position {p}: off by {worst}"
            );
        }
    }
}

#[test]
fn fewer_key_value_heads_than_query_heads_load_and_run() {
    let model = tiny_model(4, 1, true, 2);
    let stories = model
        .generate(
            &["the dog".to_string()],
            &[0],
            &GenerateOptions {
                max_chars: 40,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!stories[0].is_empty());
    let r = model
        .evaluate(&["the dog ran to the tree.".to_string()])
        .unwrap();
    assert!(r.bits_per_char.is_finite() && r.bits_per_char > 0.0);
    assert_eq!(r.chars, 24);
}

#[test]
fn the_tokenizer_file_round_trips_byte_pieces() {
    let (bytes, n) = tiny_tokenizer_bytes();
    let tok = LlamaTokenizer::from_bytes(&bytes, n).unwrap();
    // 'Z', '!' and 'é' have no piece: they fall back to byte tokens and decode back.
    let text = "the dog! Zoé";
    let ids = tok.encode(text, true);
    assert_eq!(ids[0], BOS);
    assert!(ids.contains(&tok.piece_id(" dog").unwrap()));
    assert!(ids.contains(&(3 + b'!' as u32)));
    assert!(ids.contains(&(3 + 0xC3)));
    assert_eq!(tok.decode(&ids), text);
}

#[test]
fn batched_generation_equals_one_at_a_time() {
    let model = tiny_model(4, 2, false, 3);
    let prompts = vec![
        "the dog".to_string(),
        String::new(),
        "a cat sat on the mat, then".to_string(),
    ];
    let streams = [7u64, 8, 9];
    for opts in [
        GenerateOptions {
            max_chars: 60,
            temperature: 1.0,
            top_k: Some(20),
            ..Default::default()
        },
        GenerateOptions {
            max_chars: 60,
            temperature: 1.0,
            top_p: Some(0.8),
            ..Default::default()
        },
    ] {
        let batch = model.generate(&prompts, &streams, &opts).unwrap();
        for i in 0..prompts.len() {
            let one = model
                .generate(&prompts[i..i + 1], &streams[i..i + 1], &opts)
                .unwrap();
            assert_eq!(one[0], batch[i], "prompt {i}");
        }
        // Streams matter: another stream writes another story.
        let other = model.generate(&prompts[..1], &[99], &opts).unwrap();
        assert_ne!(other[0], batch[0]);
    }
}

/// The development model of ../shared (never shipped): greedy decoding from BOS writes its
/// known first sentences. Run with `cargo test -p hashtale-models --test llama2c -- --ignored`.
#[test]
#[ignore = "needs ../shared/models/stories260K"]
fn stories260k_greedy_from_bos() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/stories260K");
    let model = Llama2cStoryModel::load(
        &dir.join("stories260K.bin"),
        &dir.join("tok512.bin"),
        &Device::Cpu,
    )
    .unwrap();
    let story = model
        .generate(
            &[String::new()],
            &[0],
            &GenerateOptions {
                max_chars: 120,
                temperature: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        story[0].starts_with(
            "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
        ),
        "{}",
        story[0]
    );
}
