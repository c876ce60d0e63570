//! Bits per character: how well a story model predicts held-out stories. Training reports it
//! on its dev split and `eval story` on any corpus; both score through the model's own forward.
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::charlm::{masked_nll_sum, CharLm, WindowKeywords};
use super::codec::{Codec, DOC_SEP};
use super::copy;
use crate::{Error, Result};

/// Bits per character of a model on some text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub bits_per_char: f64,
    pub chars: usize,
}

/// Scores stories in batched lanes (see [`eval_lanes`]): every character of every story
/// and its closing blank line, each story read after the ones before it in its lane.
pub fn evaluate(lm: &CharLm, alphabet: &Codec, stories: &[String]) -> Result<EvalResult> {
    let docs: Vec<(String, String)> = stories.iter().map(|s| (String::new(), s.clone())).collect();
    evaluate_docs(lm, alphabet, &docs, None)
}

/// Like [`evaluate`] for `(context, story)` documents: the context (a hashtag prefix) is read
/// before its story but not scored, so models with and without a prefix are scored on the same
/// characters. `keywords` gives each document's keyword ids, for a model with a keyword table
/// (none: every document reads the empty set).
pub fn evaluate_docs(
    lm: &CharLm,
    alphabet: &Codec,
    docs: &[(String, String)],
    keywords: Option<&[Vec<u32>]>,
) -> Result<EvalResult> {
    const WINDOW: usize = 256;
    if keywords.is_some_and(|k| k.len() != docs.len()) {
        return Err(Error::msg("one keyword set per document"));
    }
    let lanes = eval_lanes(docs, alphabet, 64, 1500);
    // Every document's keyword vector, made once; none given reads as no keywords.
    let input = match keywords {
        Some(k) => lm.keyword_input(k)?,
        None => lm.keyword_input(&vec![Vec::new(); docs.len()])?,
    };
    let n = lanes.len();
    let longest = lanes.iter().map(|l| l.ids.len()).max().unwrap_or(0);
    if longest < 3 {
        return Ok(EvalResult {
            bits_per_char: 0.0,
            chars: 0,
        });
    }
    let dev = lm.device();
    let mut state = lm.zero_state(n)?;
    let mut nats = 0f64;
    let chars: usize = lanes.iter().map(|l| l.chars).sum();
    let mut start = 0usize;
    // Input j predicts j+1; a lane's mask says which predictions count.
    while start < longest - 1 {
        let t = WINDOW.min(longest - 1 - start);
        let mut x = Vec::with_capacity(n * t);
        let mut y = Vec::with_capacity(n * t);
        let mut m = Vec::with_capacity(n * t);
        for lane in &lanes {
            for j in start..start + t {
                let ok = lane.scored.get(j + 1).copied().unwrap_or(false);
                x.push(lane.ids.get(j).copied().unwrap_or(0));
                y.push(lane.ids.get(j + 1).copied().unwrap_or(0));
                m.push(if ok { 1f32 } else { 0.0 });
            }
        }
        let x = Tensor::from_vec(x, (n, t), dev)?;
        let y = Tensor::from_vec(y, n * t, dev)?;
        let m = Tensor::from_vec(m, n * t, dev)?;
        let kw = match &input {
            Some(v) => {
                let per_step: Vec<Vec<u32>> = (start..start + t)
                    .map(|j| {
                        lanes
                            .iter()
                            .map(|l| l.doc.get(j).or(l.doc.last()).copied().unwrap_or(0))
                            .collect()
                    })
                    .collect();
                let mut w = WindowKeywords::with_input(v.clone(), &per_step, dev)?;
                if let (Some(table), Some(kw)) = (lm.copy_table(), keywords) {
                    let mut rows = Vec::with_capacity(n * t);
                    for lane in &lanes {
                        for j in start..start + t {
                            let next = match (lane.ids.get(j), lane.doc.get(j)) {
                                (Some(_), Some(&d)) => table.next(
                                    &kw[d as usize],
                                    copy::history(&lane.ids, &lane.doc, 0, j, table.longest()),
                                ),
                                _ => Vec::new(),
                            };
                            rows.push(next);
                        }
                    }
                    w.copy_next = lm.copy_next_mask(&rows)?;
                }
                Some(w)
            }
            None => None,
        };
        let (logits, s) = lm.forward(&x, &state, kw.as_ref(), None)?;
        // Detached, or the graph of every earlier window stays alive through the state.
        state = s.detach();
        nats += masked_nll_sum(&logits.detach(), &y, &m)?;
        start += t;
    }
    Ok(EvalResult {
        bits_per_char: if chars > 0 {
            nats / chars as f64 / std::f64::consts::LN_2
        } else {
            0.0
        },
        chars,
    })
}

/// One evaluation lane: characters and, per character, whether predicting it counts and which
/// document (index into the documents given) it belongs to, as in a training stream.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalLane {
    pub ids: Vec<u32>,
    pub scored: Vec<bool>,
    pub doc: Vec<u32>,
    /// Characters of the scored text (its stories and their closing separators): what bits per
    /// character divide by, whatever the ids spell.
    pub chars: usize,
}

/// Deals documents `(context, story)` into at most `max_lanes` evaluation lanes of similar length
/// (longest first, each to the shortest lane). A lane is a separator, then per document its
/// context (read, not scored: e.g. a hashtag prefix) and its story with the closing separator
/// (scored). Lanes let evaluation batch across stories while every story still starts from the
/// state a document start gives.
pub fn eval_lanes(
    docs: &[(String, String)],
    alphabet: &Codec,
    max_lanes: usize,
    min_lane_chars: usize,
) -> Vec<EvalLane> {
    let len = |d: &(String, String)| d.0.chars().count() + d.1.chars().count() + 2;
    let total: usize = docs.iter().map(len).sum();
    let n = (total / min_lane_chars.max(1))
        .clamp(1, max_lanes.max(1))
        .min(docs.len().max(1));
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(len(&docs[i])));
    let mut lanes: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); n];
    for i in order {
        let lane = lanes
            .iter_mut()
            .min_by_key(|(l, _)| *l)
            .expect("at least one lane");
        lane.0 += len(&docs[i]);
        lane.1.push(i);
    }
    lanes
        .into_iter()
        .map(|(_, mut ids)| {
            ids.sort_unstable();
            let sep = alphabet.encode(DOC_SEP);
            let mut lane = EvalLane {
                ids: sep.clone(),
                scored: vec![false; sep.len()],
                doc: vec![ids.first().copied().unwrap_or(0) as u32; sep.len()],
                chars: 0,
            };
            for (k, &i) in ids.iter().enumerate() {
                let (ctx, story) = &docs[i];
                let c = alphabet.encode(ctx);
                let scored_text = format!("{story}{DOC_SEP}");
                let s = alphabet.encode(&scored_text);
                lane.chars += scored_text.chars().count();
                lane.scored.extend(std::iter::repeat_n(false, c.len()));
                lane.scored.extend(std::iter::repeat_n(true, s.len()));
                // The closing separator already belongs to the next document of the lane.
                let next = ids.get(k + 1).copied().unwrap_or(i) as u32;
                let body = c.len() + s.len() - sep.len();
                lane.doc.extend(std::iter::repeat_n(i as u32, body));
                lane.doc.extend(std::iter::repeat_n(next, sep.len()));
                lane.ids.extend(c);
                lane.ids.extend(s);
            }
            lane
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::codec::Alphabet;
    use super::*;

    #[test]
    fn lanes_hold_every_story_once() {
        let a = Codec::from(Alphabet::from_texts(["x#"], 1));
        let docs: Vec<(String, String)> = (0..9)
            .map(|i| {
                (
                    (if i % 2 == 0 { "#x\n" } else { "" }).to_string(),
                    "x".repeat(10 + i * 7),
                )
            })
            .collect();
        let lanes = eval_lanes(&docs, &a, 4, 50);
        assert_eq!(lanes.len(), 4);
        let chars: usize = lanes.iter().map(|l| l.ids.len()).sum();
        let context: usize = docs.iter().map(|d| d.0.len()).sum();
        let scored: usize = docs.iter().map(|d| d.1.len() + 2).sum();
        assert_eq!(chars, scored + context + 2 * lanes.len());
        let counted: usize = lanes
            .iter()
            .map(|l| l.scored.iter().filter(|&&b| b).count())
            .sum();
        assert_eq!(counted, scored);
        assert!(lanes.iter().all(|l| l.ids.len() == l.scored.len()));
    }

    #[test]
    fn lane_characters_belong_to_their_documents() {
        let a = Codec::from(Alphabet::from_texts(["xy#\n"], 1));
        let docs: Vec<(String, String)> = (0..6)
            .map(|i| ("#x\n".to_string(), "y".repeat(5 + i)))
            .collect();
        for lane in eval_lanes(&docs, &a, 2, 10) {
            assert_eq!(lane.doc.len(), lane.ids.len());
            // Each run of one document starts right after a separator and holds its story.
            let mut start = 0;
            while start < lane.doc.len() {
                let d = lane.doc[start];
                let end = start + lane.doc[start..].iter().take_while(|&&x| x == d).count();
                let text = a.decode(&lane.ids[start..end]);
                assert!(text.starts_with("\n\n#x\n"), "{text:?}");
                let story = &docs[d as usize].1;
                assert!(text.contains(story.as_str()));
                start = end;
            }
        }
    }
}
