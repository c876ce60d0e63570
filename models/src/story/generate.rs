//! Batched story generation: every seed is one row of the same tensor at every step, and each row
//! samples from its own RNG stream, so a batch gives exactly what one-at-a-time calls give.
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

use rand::Rng;

use super::charlm::CharLm;
use super::codec::{Codec, DOC_SEP};
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
    /// Nucleus sampling: sample only among the most likely ids whose probabilities first reach
    /// `p` in sum (after `top_k`). It cuts the long tail where misspelt subword joins live.
    pub top_p: Option<f64>,
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
            top_p: None,
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

pub(crate) fn is_sentence_end(c: char) -> bool {
    matches!(c, '.' | '!' | '?')
}

/// Finished text of one stream: cut back to the last sentence end past half the length when
/// asked, then trimmed.
pub(crate) fn finish(text: &str, opts: &GenerateOptions) -> String {
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

/// The first id of the largest logit.
pub(crate) fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0 as u32
}

/// Softmax in place: `e^(x - max)` over the row's sum.
pub(crate) fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// The `top_p` that changes anything: strictly between 0 and 1.
pub(crate) fn effective_top_p(opts: &GenerateOptions) -> Option<f64> {
    opts.top_p.filter(|&p| p > 0.0 && p < 1.0)
}

/// candle-transformers' sampling rule for these options (the tensor path's draw).
pub(crate) fn sampling(opts: &GenerateOptions) -> Sampling {
    let temperature = opts.temperature;
    match (opts.top_k, effective_top_p(opts)) {
        _ if temperature <= 0.0 => Sampling::ArgMax,
        (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
        (Some(k), None) => Sampling::TopK { k, temperature },
        (None, Some(p)) => Sampling::TopP { p, temperature },
        (None, None) => Sampling::All { temperature },
    }
}

/// Zeroes the probabilities outside the nucleus ([`nucleus`]) and leaves its ids in `order`,
/// most likely first.
pub(crate) fn keep_nucleus(probs: &mut [f32], p: f32, order: &mut Vec<usize>) {
    nucleus(probs, p, order);
    // The nucleus is a prefix of the row in its sort order, so an id stays when it sorts no
    // later than the nucleus's last id.
    let Some(&last) = order.last() else {
        probs.fill(0.0);
        return;
    };
    let least = probs[last];
    for (i, v) in probs.iter_mut().enumerate() {
        let stays = match v.total_cmp(&least) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => i <= last,
            std::cmp::Ordering::Less => false,
        };
        if !stays {
            *v = 0.0;
        }
    }
}

/// Appends the ids of at least `t`, in id order. Most of a subword row lies below the
/// nucleus's floor: each block of 16 is first counted without branches (which vectorises), and
/// only blocks with a candidate are walked one id at a time.
fn ids_at_least(probs: &[f32], t: f32, out: &mut Vec<usize>) {
    const BLOCK: usize = 16;
    for (b, block) in probs.chunks(BLOCK).enumerate() {
        if block.iter().map(|&v| u32::from(v >= t)).sum::<u32>() > 0 {
            let ids = block.iter().enumerate().filter(|&(_, &v)| v >= t);
            out.extend(ids.map(|(j, _)| b * BLOCK + j));
        }
    }
}

/// The nucleus's ids, most likely first, into `order`: ids in descending order of probability
/// (ties in id order, as candle's stable sort leaves them) are kept while the kept mass is
/// below `p`. Only ids that can be in it are sorted: those of at least 1/256, narrowed to 1/64
/// and then 1/16 while these still hold `p` (the ids outside are all less likely, so the
/// nucleus is a prefix of the narrower set); when the ids of at least 1/256 do not hold `p`,
/// those of at least `(1 - p) / n` (the ids below hold at most `1 - p` together, so the nucleus
/// ends before them). Sorting all 2,048 ids of a subword row at every step halved the story
/// speed, and collecting the few hundred above the floor was still a tenth.
pub(crate) fn nucleus(probs: &[f32], p: f32, order: &mut Vec<usize>) {
    let n = probs.len();
    let floor = (1.0 - p) / n as f32;
    // A set's mass is summed in id order and the cut in sorted order; the margin keeps a
    // narrower set only where rounding cannot tell the two apart.
    const MARGIN: f32 = 1e-4;
    let mass = |order: &[usize], t: f32| -> f32 {
        order.iter().map(|&i| probs[i]).filter(|&v| v >= t).sum()
    };
    // The narrow sets first: a peaked row's ids of at least 1/256 are a few dozen, while its
    // ids above the floor can be hundreds.
    const NARROW: [f32; 3] = [1.0 / 256.0, 1.0 / 64.0, 1.0 / 16.0];
    let mut narrow = NARROW.into_iter().filter(|&t| t > floor);
    order.clear();
    if let Some(widest) = narrow.next() {
        ids_at_least(probs, widest, order);
    }
    if mass(order, 0.0) >= p + MARGIN {
        for t in narrow {
            if mass(order, t) < p + MARGIN {
                break;
            }
            order.retain(|&i| probs[i] >= t);
        }
    } else {
        order.clear();
        ids_at_least(probs, floor, order);
        if mass(order, 0.0) < p {
            // Rounding left the head short of p (the row sums to a little under 1): all ids.
            order.clear();
            order.extend(0..n);
        }
    }
    order.sort_unstable_by(|&i, &j| probs[j].total_cmp(&probs[i]).then(i.cmp(&j)));
    let mut kept = 0f32;
    let mut cut = order.len();
    for (rank, &i) in order.iter().enumerate() {
        if kept >= p {
            cut = rank;
            break;
        }
        kept += probs[i];
    }
    order.truncate(cut);
}

/// Samples one id from a row of logits on the host: the most likely id at temperature 0 or
/// less, else softmax(logits / temperature) restricted to the `top_k` most likely ids (ties at
/// the cut stay in), then to the `top_p` nucleus. Masked entries are `-inf`. The row is
/// overwritten.
pub(crate) fn sample_row(row: &mut [f32], opts: &GenerateOptions, rng: &mut impl Rng) -> u32 {
    let (temperature, top_k) = (opts.temperature, opts.top_k);
    if temperature <= 0.0 {
        return argmax(row);
    }
    if let Some(k) = top_k.filter(|&k| k > 0 && k < row.len()) {
        let mut sorted = row.to_vec();
        let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        let cut = *kth;
        for v in row.iter_mut() {
            if *v < cut {
                *v = f32::NEG_INFINITY;
            }
        }
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return argmax(row);
    }
    let inv_t = 1.0 / temperature;
    let mut total = 0f64;
    for v in row.iter_mut() {
        let p = (((*v - max) as f64) * inv_t).exp();
        *v = p as f32;
        total += p;
    }
    if let Some(p) = effective_top_p(opts) {
        for v in row.iter_mut() {
            *v = (*v as f64 / total) as f32;
        }
        keep_nucleus(row, p as f32, &mut Vec::new());
        total = row.iter().map(|&v| v as f64).sum();
    }
    let mut u = rng.gen::<f64>() * total;
    for (i, &p) in row.iter().enumerate() {
        u -= p as f64;
        if u <= 0.0 && p > 0.0 {
            return i as u32;
        }
    }
    // Rounding left a sliver: the last id with any mass.
    row.iter().rposition(|&p| p > 0.0).unwrap_or(0) as u32
}

/// Writes one story per prompt (see [`prompt`] and [`conditioned_prompt`]); prompt i samples from
/// RNG stream `streams[i]` and, for a model with a keyword table, reads keyword set
/// `keywords[i]` at every step (none given: no keywords).
pub fn generate(
    lm: &CharLm,
    alphabet: &Codec,
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
    let sampling = sampling(opts);
    let mut procs: Vec<LogitsProcessor> = streams
        .iter()
        .map(|&s| LogitsProcessor::from_sampling(stream_seed(opts.seed, s), sampling.clone()))
        .collect();
    // A story is one paragraph and carries no further hashtags.
    let banned = alphabet.story_banned();
    let prompts: Vec<Vec<u32>> = prompts.iter().map(|p| alphabet.encode(p)).collect();
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(crate::Error::msg("a story prompt is empty"));
    }
    let mut pos = vec![0usize; n]; // next prompt character to feed
    let mut ids_out: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut written = vec![0usize; n];
    let mut done = vec![opts.max_chars == 0; n];
    let mut next: Vec<u32> = prompts.iter().map(|p| p[0]).collect();
    let min_len = opts.max_chars * 4 / 5;
    let mut state = lm.zero_state(n)?;
    let mut keyword_input = match keywords {
        Some(k) => lm.keyword_input(k)?,
        None => None,
    };
    while done.iter().any(|d| !d) {
        let ids = Tensor::from_vec(next.clone(), n, &device)?;
        // What continues a hashtag each story has begun (keyword copy).
        if let (Some(input), Some(table), Some(kw)) =
            (keyword_input.as_mut(), lm.copy_table(), keywords)
        {
            let rows: Vec<Vec<u32>> = (0..n).map(|i| table.next(&kw[i], &ids_out[i])).collect();
            input.copy_next = lm.copy_next_mask(&rows)?;
        }
        let (logits, s) = lm.step(&ids, &state, keyword_input.as_ref())?;
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
                row[b as usize] = f32::NEG_INFINITY;
            }
            let id = procs[i].sample(&Tensor::from_vec(row, alphabet.len(), &Device::Cpu)?)?;
            let piece = alphabet.piece(id);
            written[i] += piece.chars().count();
            let ends_sentence = piece.trim_end().ends_with(is_sentence_end);
            ids_out[i].push(id);
            next[i] = id;
            if written[i] >= opts.max_chars
                || (opts.stop_at_sentence_end && written[i] >= min_len && ends_sentence)
            {
                done[i] = true;
            }
        }
    }
    // Decoded whole: a subword piece may hold half of a character's bytes.
    Ok(ids_out
        .iter()
        .map(|ids| finish(&alphabet.decode(ids), opts))
        .collect())
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
    fn host_sampling_honours_top_k_and_temperature() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let logits = [0.0f32, 3.0, 2.9, f32::NEG_INFINITY, -1.0];
        let opts = |temperature, top_k, top_p| GenerateOptions {
            temperature,
            top_k,
            top_p,
            ..Default::default()
        };
        assert_eq!(
            sample_row(&mut logits.clone(), &opts(0.0, None, None), &mut rng),
            1
        );
        let mut counts = [0usize; 5];
        for _ in 0..2000 {
            counts
                [sample_row(&mut logits.clone(), &opts(1.0, Some(2), None), &mut rng) as usize] +=
                1;
        }
        assert_eq!(counts[0] + counts[3] + counts[4], 0, "{counts:?}");
        assert!(counts[1] > 800 && counts[2] > 800, "{counts:?}");
        let mut counts = [0usize; 5];
        for _ in 0..2000 {
            counts[sample_row(&mut logits.clone(), &opts(1.0, None, None), &mut rng) as usize] += 1;
        }
        assert_eq!(counts[3], 0);
        assert!(counts[0] > 0 && counts[4] > 0, "{counts:?}");
        // The two likeliest hold about 0.97 of the mass: p = 0.9 keeps just them, and p = 1
        // changes nothing.
        let mut counts = [0usize; 5];
        for _ in 0..2000 {
            counts[sample_row(&mut logits.clone(), &opts(1.0, None, Some(0.9)), &mut rng)
                as usize] += 1;
        }
        assert_eq!(counts[0] + counts[3] + counts[4], 0, "{counts:?}");
        assert!(counts[1] > 800 && counts[2] > 800, "{counts:?}");
        let mut counts = [0usize; 5];
        for _ in 0..2000 {
            counts[sample_row(&mut logits.clone(), &opts(1.0, None, Some(1.0)), &mut rng)
                as usize] += 1;
        }
        assert!(counts[0] > 0 && counts[4] > 0, "{counts:?}");
    }

    #[test]
    fn the_nucleus_keeps_the_likeliest_until_the_mass_is_reached() {
        let mut order = Vec::new();
        let mut p = [0.1f32, 0.5, 0.3, 0.1];
        keep_nucleus(&mut p, 0.7, &mut order);
        assert_eq!(p, [0.0, 0.5, 0.3, 0.0]);
        // Ties at the cut go in id order, as candle's stable sort leaves them.
        let mut p = [0.25f32, 0.25, 0.25, 0.25];
        keep_nucleus(&mut p, 0.5, &mut order);
        assert_eq!(p, [0.25, 0.25, 0.0, 0.0]);
        // A long, flat row: the same as a full stable sort (candle's rule).
        let row: Vec<f32> = (0..3000u32)
            .map(|i| ((i * 7919) % 1000) as f32 + 1.0)
            .collect();
        let total: f32 = row.iter().sum();
        let row: Vec<f32> = row.iter().map(|v| v / total).collect();
        for p in [0.01f32, 0.3, 0.9, 0.999, 1.5] {
            let mut ours = row.clone();
            keep_nucleus(&mut ours, p, &mut order);
            assert_eq!(ours, nucleus_by_full_sort(&row, p), "p = {p}");
        }
        // Peaked rows (the nucleus within the ids of at least 1/64, or not), likewise.
        for peak in [0.3f32, 0.6, 0.9] {
            let rest = (1.0 - peak) / 2047.0;
            let row: Vec<f32> = (0..2048)
                .map(|i| match i {
                    700 => peak,
                    _ => rest * (1.0 + ((i * 31) % 7) as f32 / 10.0) / 1.3,
                })
                .collect();
            for p in [0.2f32, 0.5, 0.75, 0.95] {
                let mut ours = row.clone();
                keep_nucleus(&mut ours, p, &mut order);
                let theirs = nucleus_by_full_sort(&row, p);
                assert_eq!(ours, theirs, "peak {peak}, p = {p}");
                assert_eq!(order.len(), theirs.iter().filter(|&&v| v > 0.0).count());
            }
        }
    }

    /// candle's rule: a stable sort of the whole row, kept while the mass is below p.
    fn nucleus_by_full_sort(row: &[f32], p: f32) -> Vec<f32> {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
        let mut kept = row.to_vec();
        let mut cum = 0f32;
        for &i in &idx {
            if cum >= p {
                kept[i] = 0.0;
            } else {
                cum += row[i];
            }
        }
        kept
    }

    #[test]
    fn streams_differ() {
        assert_ne!(stream_seed(1, 0), stream_seed(1, 1));
        assert_ne!(stream_seed(1, 0), stream_seed(2, 0));
        assert_eq!(stream_seed(5, 3), stream_seed(5, 3));
    }
}
