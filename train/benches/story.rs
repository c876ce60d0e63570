//! Story-model benchmark (not a test): training step time for a 2×512 LSTM with embedding 256,
//! batch 32, vocabulary 80, and batch-64 generation of 500 characters, on 2 threads.
//!
//! `cargo bench -p hashtale-train --bench story` (set `STORY_BENCH_STEPS`, `STORY_BENCH_THREADS`,
//! `STORY_BENCH_BPTT` to change the defaults: 100 steps, 2 threads, BPTT 100).
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use hashtale_models::story::charlm::{CharLm, CharLmConfig};
use hashtale_models::story::codec::Alphabet;
use hashtale_models::story::generate::{generate, GenerateOptions};
use hashtale_train::story::rmsprop::{clip_grad_norm, RmsProp, RmsPropConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn main() -> hashtale_models::Result<()> {
    let threads = env_usize("STORY_BENCH_THREADS", 2);
    // candle reads the rayon variable for its matmul threads; set it before any work starts.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let steps = env_usize("STORY_BENCH_STEPS", 100);
    let bptt = env_usize("STORY_BENCH_BPTT", 100);
    let (batch, vocab) = (32, 80);
    let hidden = env_usize("STORY_BENCH_HIDDEN", 512);
    let emb = env_usize("STORY_BENCH_EMB", 256);
    let dev = Device::Cpu;
    let cfg = CharLmConfig {
        vocab,
        emb,
        hidden,
        layers: 2,
        dropout: 0.1,
        keywords: 0,
        keyword_dim: 0,
        copy: false,
    };
    let varmap = VarMap::new();
    let lm = CharLm::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let vars = varmap.all_vars();
    let mut opt = RmsProp::new(
        vars.clone(),
        RmsPropConfig {
            lr: 1e-3,
            ..Default::default()
        },
    )?;
    let mut rng = StdRng::seed_from_u64(1);
    let mut state = lm.zero_state(batch)?;
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let x: Vec<u32> = (0..batch * bptt)
            .map(|_| rng.gen_range(0..vocab as u32))
            .collect();
        let y: Vec<u32> = (0..batch * bptt)
            .map(|_| rng.gen_range(0..vocab as u32))
            .collect();
        let t0 = Instant::now();
        let x = Tensor::from_vec(x, (batch, bptt), &dev)?;
        let y = Tensor::from_vec(y, batch * bptt, &dev)?;
        let (logits, s) = lm.forward(&x, &state, None, Some(&mut rng))?;
        state = s.detach();
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, &vars, 1.0)?;
        opt.step(&grads)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    println!(
        "train step (2x{hidden} LSTM, emb {emb}, batch {batch}, bptt {bptt}, vocab {vocab}, {threads} threads): mean {:.3} s, median {:.3} s over {steps} steps ({:.0} chars/s)",
        mean,
        sorted[sorted.len() / 2],
        (batch * bptt) as f64 / mean
    );

    let alphabet = Alphabet::new((0..vocab as u32 - 3).map(|i| char::from_u32(0x24 + i).unwrap()));
    let seeds: Vec<String> = (0..64).map(|i| format!("#tag{i}")).collect();
    let streams: Vec<u64> = (0..64).collect();
    let opts = GenerateOptions::default();
    let t0 = Instant::now();
    let out = generate(&lm, &alphabet.into(), &seeds, None, &streams, &opts)?;
    let secs = t0.elapsed().as_secs_f64();
    let chars: usize = out.iter().map(|s| s.chars().count()).sum();
    println!(
        "generation (batch 64, {} chars each): {:.2} s, {:.0} chars/s",
        opts.max_chars,
        secs,
        chars as f64 / secs
    );
    Ok(())
}
