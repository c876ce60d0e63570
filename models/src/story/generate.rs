//! Batched story generation: every seed is one row of the same tensor at every step, and each row
//! samples from its own RNG stream, so a batch gives exactly what one-at-a-time calls give.
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

use super::charlm::CharLm;
use super::corpus::{Alphabet, DOC_SEP};
use super::keywords::format_prefix;
use crate::Result;

/// How to write stories.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Length of the story after the seed, in characters.
    pub max_chars: usize,
    /// Softmax temperature; 0 or less picks the most likely character.
    pub temperature: f64,
    /// Sample only among the k most likely characters.
    pub top_k: Option<usize>,
    /// Stop after the first sentence end (`.`, `!`, `?`) once 80% of `max_chars` is written, and
    /// cut back to the last sentence end when none comes before `max_chars`.
    pub stop_at_sentence_end: bool,
    /// Base seed; stream i uses [`stream_seed`]`(seed, i)`.
    pub seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_chars: 500,
            temperature: 0.8,
            top_k: None,
            stop_at_sentence_end: false,
            seed: 299_792_458,
        }
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The RNG seed of stream `index` under base seed `seed` (well mixed, so neighbouring streams are
/// unrelated).
pub fn stream_seed(seed: u64, index: u64) -> u64 {
    splitmix64(seed ^ splitmix64(index))
}

/// The characters the model reads before writing: a document start, the seed, and a space when
/// the seed does not end in whitespace (the training format is `#tag story`).
pub fn prompt(seed: &str) -> String {
    let mut p = String::from(DOC_SEP);
    let s = seed.trim_start();
    p.push_str(s);
    if !s.is_empty() && !s.ends_with(char::is_whitespace) {
        p.push(' ');
    }
    p
}

/// The prompt of a hashtag-conditioned model: a document start and the prefix line of the
/// hashtags (nothing more when there are none).
pub fn conditioned_prompt<S: AsRef<str>>(tags: &[S]) -> String {
    format!("{DOC_SEP}{}", format_prefix(tags))
}

fn is_sentence_end(c: char) -> bool {
    matches!(c, '.' | '!' | '?')
}

/// Finished text of one stream: cut back to the last sentence end past half the length when
/// asked, then trimmed.
fn finish(text: &str, opts: &GenerateOptions) -> String {
    let mut t = text;
    if opts.stop_at_sentence_end && !t.ends_with(is_sentence_end) {
        let half = t.len() / 2;
        if let Some((i, c)) = t.char_indices().rev().find(|&(_, c)| is_sentence_end(c)) {
            if i >= half {
                t = &t[..i + c.len_utf8()];
            }
        }
    }
    t.trim().to_string()
}

/// Writes one story per prompt (see [`prompt`] and [`conditioned_prompt`]); prompt i samples from
/// RNG stream `streams[i]` and, for a model with a keyword table, reads keyword set
/// `keywords[i]` at every step (none given: no keywords).
pub fn generate(
    lm: &CharLm,
    alphabet: &Alphabet,
    prompts: &[String],
    keywords: Option<&[Vec<u32>]>,
    streams: &[u64],
    opts: &GenerateOptions,
) -> Result<Vec<String>> {
    assert_eq!(prompts.len(), streams.len(), "one stream per prompt");
    if keywords.is_some_and(|k| k.len() != prompts.len()) {
        return Err(crate::Error::msg("one keyword set per prompt"));
    }
    let n = prompts.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let device = lm.device().clone();
    let sampling = match (opts.temperature, opts.top_k) {
        (t, _) if t <= 0.0 => Sampling::ArgMax,
        (t, Some(k)) => Sampling::TopK { k, temperature: t },
        (t, None) => Sampling::All { temperature: t },
    };
    let mut procs: Vec<LogitsProcessor> = streams
        .iter()
        .map(|&s| LogitsProcessor::from_sampling(stream_seed(opts.seed, s), sampling.clone()))
        .collect();
    // A story is one paragraph and carries no further hashtags.
    let banned: Vec<usize> = ['\n', '#']
        .iter()
        .filter(|&&c| alphabet.contains(c))
        .map(|&c| alphabet.encode_char(c) as usize)
        .collect();
    let prompts: Vec<Vec<u32>> = prompts.iter().map(|p| alphabet.encode(p)).collect();
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(crate::Error::msg("a story prompt is empty"));
    }
    let mut pos = vec![0usize; n]; // next prompt character to feed
    let mut out: Vec<String> = vec![String::new(); n];
    let mut written = vec![0usize; n];
    let mut done = vec![opts.max_chars == 0; n];
    let mut next: Vec<u32> = prompts.iter().map(|p| p[0]).collect();
    let min_len = opts.max_chars * 4 / 5;
    let mut state = lm.zero_state(n)?;
    let keyword_vectors = match keywords {
        Some(k) => lm.keyword_vectors(k)?,
        None => None,
    };
    while done.iter().any(|d| !d) {
        let ids = Tensor::from_vec(next.clone(), n, &device)?;
        let (logits, s) = lm.step(&ids, &state, keyword_vectors.as_ref())?;
        // Detached: no gradients here, and the state would otherwise keep every step's graph.
        state = s.detach();
        let rows = logits.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        for i in 0..n {
            if done[i] {
                continue;
            }
            pos[i] += 1;
            if pos[i] < prompts[i].len() {
                next[i] = prompts[i][pos[i]];
                continue;
            }
            let mut row = rows[i].clone();
            for &b in &banned {
                row[b] = f32::NEG_INFINITY;
            }
            let id = procs[i].sample(&Tensor::from_vec(row, alphabet.len(), &Device::Cpu)?)?;
            let c = alphabet.decode_one(id);
            out[i].push(c);
            written[i] += 1;
            next[i] = id;
            if written[i] >= opts.max_chars
                || (opts.stop_at_sentence_end && written[i] >= min_len && is_sentence_end(c))
            {
                done[i] = true;
            }
        }
    }
    Ok(out.iter().map(|t| finish(t, opts)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_adds_separator_and_space() {
        assert_eq!(prompt("#beach"), "\n\n#beach ");
        assert_eq!(prompt("#beach "), "\n\n#beach ");
        assert_eq!(prompt(""), "\n\n");
        assert_eq!(conditioned_prompt(&["#Beach", "dog"]), "\n\n#beach #dog\n");
        assert_eq!(conditioned_prompt::<&str>(&[]), "\n\n");
    }

    #[test]
    fn finish_cuts_back_to_sentence_end() {
        let o = GenerateOptions {
            stop_at_sentence_end: true,
            ..Default::default()
        };
        assert_eq!(
            finish("One two. Three four. Fi", &o),
            "One two. Three four."
        );
        assert_eq!(finish("No end here at all", &o), "No end here at all");
        let o = GenerateOptions::default();
        assert_eq!(finish(" One. Tw", &o), "One. Tw");
    }

    #[test]
    fn streams_differ() {
        assert_ne!(stream_seed(1, 0), stream_seed(1, 1));
        assert_ne!(stream_seed(1, 0), stream_seed(2, 0));
        assert_eq!(stream_seed(5, 3), stream_seed(5, 3));
    }
}
