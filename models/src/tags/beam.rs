//! Beam search batched over many images at once.
//!
//! All beams of all images advance together: the state holds B·K rows, one `step` call per
//! time step. A hashtag never repeats within a hypothesis, and a hypothesis holds at most
//! `max_tags` tags. Each emitted tag keeps its probability and the attention map that chose it.
use candle_core::{Device, Result, Tensor, D};

use super::decoder::StepDecoder;
use super::vocab::{END, START};
use crate::encoder::Encoded;

/// One tag of a decoded hypothesis.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedTag {
    pub id: u32,
    /// P(tag | image, previous tags) at the step it was emitted.
    pub prob: f32,
    /// Attention over the annotation grid at that step (empty for decoders without attention).
    pub attention: Vec<f32>,
}

/// The best hypothesis for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub tags: Vec<DecodedTag>,
    /// Sum of log-probabilities, `<end>` included.
    pub log_prob: f32,
    /// Next-tag distribution at the last step (the one that chose `<end>` or hit the cap),
    /// used to fill lists to a fixed length for evaluation.
    pub last_distribution: Vec<f32>,
}

#[derive(Debug, Clone, Copy)]
pub struct BeamOptions {
    pub beam_size: usize,
    pub max_tags: usize,
    /// `<end>` is not allowed before this many tags: raw log-probability sums favour short
    /// lists, and an image with no hashtag (or a story with no seed) helps nobody.
    pub min_tags: usize,
}

impl Default for BeamOptions {
    fn default() -> Self {
        Self {
            beam_size: 3,
            max_tags: 10,
            min_tags: 3,
        }
    }
}

#[derive(Clone)]
struct Hyp {
    tags: Vec<DecodedTag>,
    log_prob: f32,
}

/// Decodes every image of `enc` with beam search; one result per image, in order.
pub fn beam_search<M: StepDecoder>(
    model: &M,
    enc: &Encoded,
    opts: BeamOptions,
) -> Result<Vec<Decoded>> {
    let b = enc.pooled.dim(0)?;
    let k = opts.beam_size.max(1);
    let device: Device = enc.pooled.device().clone();
    // Every image starts with k copies of its state; only beam 0 is live at first so the
    // k copies do not fill the beam with duplicates.
    let rep: Vec<u32> = (0..b as u32)
        .flat_map(|i| std::iter::repeat_n(i, k))
        .collect();
    let mut state = model
        .init_state(enc)?
        .select(&Tensor::new(rep.as_slice(), &device)?)?;
    let mut beams: Vec<Vec<Hyp>> = (0..b)
        .map(|_| {
            (0..k)
                .map(|j| Hyp {
                    tags: vec![],
                    log_prob: if j == 0 { 0.0 } else { f32::NEG_INFINITY },
                })
                .collect()
        })
        .collect();
    let mut prev: Vec<u32> = vec![START; b * k];
    let mut finished: Vec<Option<Decoded>> = vec![None; b];
    let mut closed: Vec<Option<Decoded>> = vec![None; b];

    for step in 0..=opts.max_tags {
        let out = model.step(&state, &Tensor::new(prev.as_slice(), &device)?, None)?;
        let log_probs = candle_nn::ops::log_softmax(&out.logits, D::Minus1)?.to_vec2::<f32>()?;
        let alphas = match &out.alpha {
            Some(a) => Some(a.to_vec2::<f32>()?),
            None => None,
        };
        let last_step = step == opts.max_tags;
        let mut next_rows: Vec<u32> = Vec::with_capacity(b * k);
        let mut next_prev: Vec<u32> = Vec::with_capacity(b * k);
        for img in 0..b {
            if finished[img].is_some() {
                // Keep shapes fixed: finished images carry dummy rows that are never read.
                next_rows.extend(std::iter::repeat_n((img * k) as u32, k));
                next_prev.extend(std::iter::repeat_n(END, k));
                continue;
            }
            // Candidates: (score, beam, token). <end> closes a hypothesis.
            let mut cands: Vec<(f32, usize, u32)> = Vec::new();
            for (j, hyp) in beams[img].iter().enumerate() {
                if hyp.log_prob == f32::NEG_INFINITY {
                    continue;
                }
                let row = &log_probs[img * k + j];
                // (Also when every real tag is used: a tiny vocabulary must still end.)
                if hyp.tags.len() >= opts.min_tags.min(opts.max_tags)
                    || hyp.tags.len() + 3 >= row.len()
                {
                    cands.push((hyp.log_prob + row[END as usize], j, END));
                }
                if last_step {
                    continue;
                }
                for (tok, &lp) in row.iter().enumerate().skip(3) {
                    let tok = tok as u32;
                    if hyp.tags.iter().any(|t| t.id == tok) {
                        continue;
                    }
                    cands.push((hyp.log_prob + lp, j, tok));
                }
            }
            cands.sort_by(|a, c| c.0.total_cmp(&a.0).then(a.1.cmp(&c.1)).then(a.2.cmp(&c.2)));
            let mut new_beams: Vec<Hyp> = Vec::with_capacity(k);
            let mut best_end: Option<(f32, usize)> = None;
            for &(score, j, tok) in &cands {
                if tok == END {
                    if best_end.is_none() {
                        best_end = Some((score, j));
                    }
                    continue;
                }
                if new_beams.len() < k {
                    let mut hyp = beams[img][j].clone();
                    hyp.tags.push(DecodedTag {
                        id: tok,
                        prob: log_probs[img * k + j][tok as usize].exp(),
                        attention: alphas
                            .as_ref()
                            .map(|a| a[img * k + j].clone())
                            .unwrap_or_default(),
                    });
                    hyp.log_prob = score;
                    next_rows.push((img * k + j) as u32);
                    next_prev.push(tok);
                    new_beams.push(hyp);
                }
                if new_beams.len() == k && best_end.is_some() {
                    break;
                }
            }
            if let Some((score, j)) = best_end {
                if closed[img].as_ref().is_none_or(|c| score > c.log_prob) {
                    closed[img] = Some(Decoded {
                        tags: beams[img][j].tags.clone(),
                        log_prob: score,
                        last_distribution: log_probs[img * k + j].iter().map(|x| x.exp()).collect(),
                    });
                }
            }
            // Scores only fall as tags are added, so a closed hypothesis at least as good as
            // every open one is final.
            let done = match (&closed[img], new_beams.first()) {
                (Some(c), Some(open)) => c.log_prob >= open.log_prob,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if done {
                finished[img] = closed[img].take();
                next_rows.truncate(img * k);
                next_prev.truncate(img * k);
                next_rows.extend(std::iter::repeat_n((img * k) as u32, k));
                next_prev.extend(std::iter::repeat_n(END, k));
                continue;
            }
            while new_beams.len() < k {
                new_beams.push(Hyp {
                    tags: vec![],
                    log_prob: f32::NEG_INFINITY,
                });
                next_rows.push((img * k) as u32);
                next_prev.push(END);
            }
            beams[img] = new_beams;
        }
        if finished.iter().all(Option::is_some) {
            break;
        }
        // Every row picks a row of its own image's k, whose annotations are the same: only
        // the recurrent state moves.
        debug_assert!(next_rows
            .iter()
            .enumerate()
            .all(|(r, &src)| r / k == src as usize / k));
        state = out
            .state
            .select_recurrent(&Tensor::new(next_rows.as_slice(), &device)?)?;
        prev = next_prev;
    }
    Ok(finished
        .into_iter()
        .map(|f| f.expect("every image finishes by the last step"))
        .collect())
}
