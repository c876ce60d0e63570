//! Story models in llama2.c's checkpoint format (`stories15M.bin`, `stories42M.bin`,
//! `stories110M.bin`, `stories260K.bin`), run by `candle_transformers::models::llama2_c`.
//!
//! The file (llama2.c's legacy "version 0" export): seven `i32` (dim, hidden_dim, n_layers,
//! n_heads, n_kv_heads, vocab_size, seq_len), then `f32` weights: token embedding (vocab, dim),
//! attention RMS weights (layers, dim), wq (layers, dim, dim), wk and wv (layers, kv_dim, dim)
//! with kv_dim = dim / n_heads · n_kv_heads, wo (layers, dim, dim), FFN RMS weights, w1
//! (layers, hidden, dim), w2 (layers, dim, hidden), w3 (layers, hidden, dim), the final RMS weight
//! (dim), the RoPE tables (seq_len, head_size / 2) twice, and, when vocab_size is negative, an
//! unshared classifier (vocab, dim). candle's own reader sizes wk and wv as (dim, dim), which is
//! wrong for every model with fewer key/value heads than query heads (stories260K has 8 and 4);
//! this one sizes them from `n_kv_heads` and checks the file's length before reading.
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama2_c::{Cache, Config, Llama};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::eval::EvalResult;
use super::generate::{finish, is_sentence_end, sample_row, stream_seed, GenerateOptions};
use super::keywords::prefix_tags;
use super::llama_host::HostLlama;
use super::llama_tokenizer::{LlamaTokenizer, BOS, EOS};
use crate::{Error, Result};

/// The magic of llama2.c's newer export versions, which this reader does not take.
const NEW_EXPORT_MAGIC: u32 = 0x616b_3432;

/// A checkpoint's header.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<(Config, bool)> {
    let bad = |m: String| Error::msg(format!("not a llama2.c checkpoint: {m}"));
    if bytes.len() < 28 {
        return Err(bad("shorter than its header".into()));
    }
    let word = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    if word(0) as u32 == NEW_EXPORT_MAGIC {
        return Err(bad(
            "llama2.c export version 1 or 2; export it with --version 0 (the legacy format)".into(),
        ));
    }
    let [dim, hidden, layers, heads, kv_heads, vocab, seq_len] = [0, 1, 2, 3, 4, 5, 6].map(word);
    let shared = vocab > 0;
    let vocab = vocab.unsigned_abs() as usize;
    let positive = [dim, hidden, layers, heads, kv_heads, seq_len];
    if positive.iter().any(|&v| v <= 0) || vocab == 0 {
        return Err(bad(format!("non-positive size in header {positive:?}")));
    }
    let (dim, heads, kv_heads) = (dim as usize, heads as usize, kv_heads as usize);
    if dim % heads != 0 || heads % kv_heads != 0 || (dim / heads) % 2 != 0 {
        return Err(bad(format!(
            "dim {dim}, {heads} heads and {kv_heads} key/value heads do not divide"
        )));
    }
    let cfg = Config {
        dim,
        hidden_dim: hidden as usize,
        n_layers: layers as usize,
        n_heads: heads,
        n_kv_heads: kv_heads,
        vocab_size: vocab,
        seq_len: seq_len as usize,
        norm_eps: 1e-5,
    };
    Ok((cfg, shared))
}

/// Names and shapes of a checkpoint's tensors, in file order (stacked per-layer tensors as one):
/// the names [`write_checkpoint`] expects.
pub fn tensor_shapes(c: &Config, shared: bool) -> Vec<(&'static str, Vec<usize>)> {
    let (l, d, h, v) = (c.n_layers, c.dim, c.hidden_dim, c.vocab_size);
    let kv = c.dim / c.n_heads * c.n_kv_heads;
    let half = c.dim / c.n_heads / 2;
    let mut t = vec![
        ("embed", vec![v, d]),
        ("rms_att", vec![l, d]),
        ("wq", vec![l, d, d]),
        ("wk", vec![l, kv, d]),
        ("wv", vec![l, kv, d]),
        ("wo", vec![l, d, d]),
        ("rms_ffn", vec![l, d]),
        ("w1", vec![l, h, d]),
        ("w2", vec![l, d, h]),
        ("w3", vec![l, h, d]),
        ("rms_final", vec![d]),
        ("freq_real", vec![c.seq_len, half]),
        ("freq_imag", vec![c.seq_len, half]),
    ];
    if !shared {
        t.push(("wcls", vec![v, d]));
    }
    t
}

/// A checkpoint's header and its tensors as flat `f32` vectors in file order (see
/// [`tensor_shapes`]), after checking the file's length against the header.
pub(crate) fn read_raw(bytes: &[u8]) -> Result<(Config, bool, Vec<Vec<f32>>)> {
    let (cfg, shared) = parse_header(bytes)?;
    let layout = tensor_shapes(&cfg, shared);
    let floats: usize = layout
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let expected = 28 + 4 * floats;
    if bytes.len() != expected {
        return Err(Error::msg(format!(
            "llama2.c checkpoint is {} bytes, but its header ({cfg:?}) needs {expected}",
            bytes.len()
        )));
    }
    let mut at = 28;
    let tensors = layout
        .iter()
        .map(|(_, shape)| {
            let n: usize = shape.iter().product();
            let v = bytes[at..at + 4 * n]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            at += 4 * n;
            v
        })
        .collect();
    Ok((cfg, shared, tensors))
}

/// Reads a checkpoint's bytes into candle's llama2_c tensor names.
pub fn read_checkpoint(bytes: &[u8], device: &Device) -> Result<(Config, VarBuilder<'static>)> {
    let (cfg, shared, data) = read_raw(bytes)?;
    let mut raw: HashMap<&str, Tensor> = HashMap::new();
    for ((name, shape), v) in tensor_shapes(&cfg, shared).into_iter().zip(data) {
        raw.insert(name, Tensor::from_vec(v, shape.as_slice(), device)?);
    }
    let mut ws: HashMap<String, Tensor> = HashMap::new();
    let embed = raw["embed"].clone();
    ws.insert("rot.freq_cis_real".into(), raw["freq_real"].clone());
    ws.insert("rot.freq_cis_imag".into(), raw["freq_imag"].clone());
    ws.insert("model.embed_tokens.weight".into(), embed.clone());
    let head = raw.get("wcls").cloned().unwrap_or(embed);
    ws.insert("lm_head.weight".into(), head);
    ws.insert("model.norm.weight".into(), raw["rms_final"].clone());
    let per_layer = [
        ("wq", "self_attn.q_proj.weight"),
        ("wk", "self_attn.k_proj.weight"),
        ("wv", "self_attn.v_proj.weight"),
        ("wo", "self_attn.o_proj.weight"),
        ("w1", "mlp.gate_proj.weight"),
        ("w2", "mlp.down_proj.weight"),
        ("w3", "mlp.up_proj.weight"),
        ("rms_att", "input_layernorm.weight"),
        ("rms_ffn", "post_attention_layernorm.weight"),
    ];
    for layer in 0..cfg.n_layers {
        for (src, dst) in per_layer {
            ws.insert(
                format!("model.layers.{layer}.{dst}"),
                raw[src].i(layer)?.contiguous()?,
            );
        }
    }
    Ok((cfg, VarBuilder::from_tensors(ws, DType::F32, device)))
}

/// Writes a checkpoint in the same format from named tensors (the names of [`layout`]); used by
/// tests to make tiny random models, and by anyone exporting a model of ours to llama2.c.
pub fn write_checkpoint(
    cfg: &Config,
    shared: bool,
    tensors: &HashMap<String, Tensor>,
) -> Result<Vec<u8>> {
    let vocab = if shared {
        cfg.vocab_size as i32
    } else {
        -(cfg.vocab_size as i32)
    };
    let header = [
        cfg.dim as i32,
        cfg.hidden_dim as i32,
        cfg.n_layers as i32,
        cfg.n_heads as i32,
        cfg.n_kv_heads as i32,
        vocab,
        cfg.seq_len as i32,
    ];
    let mut out: Vec<u8> = header.iter().flat_map(|v| v.to_le_bytes()).collect();
    for (name, shape) in tensor_shapes(cfg, shared) {
        let t = tensors
            .get(name)
            .ok_or_else(|| Error::msg(format!("no tensor {name}")))?;
        if t.dims() != shape.as_slice() {
            return Err(Error::msg(format!(
                "{name}: shape {:?}, want {shape:?}",
                t.dims()
            )));
        }
        for v in t.flatten_all()?.to_vec1::<f32>()? {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

/// The prompt a llama2.c story model continues for some hashtags (the templates of
/// `docs/story.md`): none → an empty prompt (the model starts from BOS); one →
/// "Once upon a time, there was a dog."; more → "… there was a dog. One day, the dog saw a
/// beach and a friend." The prompt is the story's first sentence(s).
pub fn prompt_for_tags<S: AsRef<str>>(tags: &[S]) -> String {
    let tags = prefix_tags(tags);
    let Some((first, rest)) = tags.split_first() else {
        return String::new();
    };
    let mut p = format!("Once upon a time, there was {} {first}.", article(first));
    if !rest.is_empty() {
        let seen: Vec<String> = rest.iter().map(|t| format!("{} {t}", article(t))).collect();
        let list = match seen.as_slice() {
            [one] => one.clone(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
            [] => unreachable!(),
        };
        p.push_str(&format!(" One day, the {first} saw {list}."));
    }
    p
}

/// First names of the corpus templates (common, short, in the tokenizers' vocabularies).
const NAMES: &[&str] = &[
    "Lily", "Tom", "Sam", "Anna", "Ben", "Mia", "Max", "Sue", "Jack", "Emma", "Leo", "Kate",
];

/// A varied opening sentence about some words, for generating a training corpus from a
/// llama2.c model: the same words appear in several sentence shapes (a name and one of five
/// templates picked by `rng`), so a model trained on the corpus learns the words, not one
/// template. The templates: "Once upon a time, there was a dog.", "Lily saw a dog.", "One day,
/// Tom found a dog.", "Anna loved her dog.", "Ben and mom went to see a dog.", each with
/// the further words added as "… a dog and a beach".
pub fn corpus_prompt<S: AsRef<str>>(words: &[S], rng: &mut impl rand::Rng) -> String {
    let words = prefix_tags(words);
    let Some((first, rest)) = words.split_first() else {
        return String::new();
    };
    let name = NAMES[rng.gen_range(0..NAMES.len())];
    let mut things = vec![format!("{} {first}", article(first))];
    things.extend(rest.iter().map(|w| format!("{} {w}", article(w))));
    let list = match things.as_slice() {
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
        [] => unreachable!(),
    };
    match rng.gen_range(0..5) {
        0 => format!("Once upon a time, there was {list}."),
        1 => format!("{name} saw {list}."),
        2 => format!("One day, {name} found {list}."),
        3 => {
            let the: Vec<String> = std::iter::once(first)
                .chain(rest)
                .map(|w| format!("the {w}"))
                .collect();
            format!("{name} loved {}.", the.join(" and "))
        }
        _ => format!("{name} and mom went to see {list}."),
    }
}

fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// A loaded llama2.c story model with its tokenizer.
#[derive(Clone)]
pub struct Llama2cStoryModel {
    model: Llama,
    /// The same weights for host decoding (generation).
    host: std::sync::Arc<HostLlama>,
    vb: VarBuilder<'static>,
    config: Config,
    tokenizer: LlamaTokenizer,
    version: String,
}

impl std::fmt::Debug for Llama2cStoryModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Llama2cStoryModel({}, {:?})", self.version, self.config)
    }
}

impl Llama2cStoryModel {
    /// Loads `checkpoint` (llama2.c format) and `tokenizer` (llama2.c's `tokenizer.bin` format).
    pub fn load(checkpoint: &Path, tokenizer: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(checkpoint).map_err(|e| Error::io(checkpoint, e))?;
        let name = checkpoint
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "llama2c".into());
        let version = crate::hash::version(
            &format!("story-llama2c-{name}"),
            &crate::hash::digest(&bytes, crate::hash::DigestWidth::High32),
        );
        let with_path = |e: Error| Error::msg(format!("{}: {e}", checkpoint.display()));
        let (config, _) = parse_header(&bytes).map_err(with_path)?;
        let tokenizer = LlamaTokenizer::load(tokenizer, config.vocab_size)?;
        Self::from_bytes(&bytes, tokenizer, version, device).map_err(with_path)
    }

    /// A model from a checkpoint's bytes (see [`read_checkpoint`]) and its tokenizer.
    pub fn from_bytes(
        bytes: &[u8],
        tokenizer: LlamaTokenizer,
        version: String,
        device: &Device,
    ) -> Result<Self> {
        let (config, vb) = read_checkpoint(bytes, device)?;
        let host = std::sync::Arc::new(HostLlama::from_checkpoint(bytes)?);
        if tokenizer.len() != config.vocab_size {
            return Err(Error::msg(format!(
                "tokenizer has {} pieces, the model {}",
                tokenizer.len(),
                config.vocab_size
            )));
        }
        let model = Llama::load(vb.clone(), config.clone())?;
        Ok(Llama2cStoryModel {
            model,
            host,
            vb,
            config,
            tokenizer,
            version,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn tokenizer(&self) -> &LlamaTokenizer {
        &self.tokenizer
    }

    /// `story-llama2c-<file stem>-<digest of the checkpoint>`.
    pub fn version(&self) -> String {
        self.version.clone()
    }

    /// One story per hashtag list, each continuing [`prompt_for_tags`]; list i samples from RNG
    /// stream `streams[i]`. The prompt is the story's opening and is part of what is returned.
    pub fn generate_for_tags(
        &self,
        tag_lists: &[Vec<String>],
        streams: &[u64],
        opts: &GenerateOptions,
    ) -> Result<Vec<String>> {
        let prompts: Vec<String> = tag_lists.iter().map(|t| prompt_for_tags(t)).collect();
        let stories = self.generate(&prompts, streams, opts)?;
        Ok(prompts
            .iter()
            .zip(stories)
            .map(|(p, s)| join_prompt(p, &s))
            .collect())
    }

    /// Continues each prompt (the text after it is returned, finished as
    /// [`GenerateOptions`] asks). All rows advance together, one token per step, on the host
    /// decoder ([`HostLlama`]): a row still reading its prompt is fed its next prompt token, so
    /// rows of different prompt lengths share positions and need no padding, and row i samples
    /// from RNG stream `streams[i]` alone, so a batch writes what one-at-a-time calls write.
    pub fn generate(
        &self,
        prompts: &[String],
        streams: &[u64],
        opts: &GenerateOptions,
    ) -> Result<Vec<String>> {
        if prompts.len() != streams.len() {
            return Err(Error::msg("one RNG stream per prompt"));
        }
        let n = prompts.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let tokens: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| self.tokenizer.encode(p, true))
            .collect();
        let longest = tokens.iter().map(Vec::len).max().unwrap_or(1);
        if longest >= self.config.seq_len {
            return Err(Error::msg(format!(
                "a prompt of {longest} tokens leaves no room in the model's {} positions",
                self.config.seq_len
            )));
        }
        let mut rngs: Vec<StdRng> = streams
            .iter()
            .map(|&s| StdRng::seed_from_u64(stream_seed(opts.seed, s)))
            .collect();
        // A story is one paragraph without hashtags; BOS/EOS end it.
        let banned = self.tokenizer.ids_containing(b"\n#");
        let mut out: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut written = vec![0usize; n];
        let mut done = vec![opts.max_chars == 0; n];
        let mut next: Vec<u32> = tokens.iter().map(|t| t[0]).collect();
        let min_len = opts.max_chars * 4 / 5;
        let vocab = self.config.vocab_size;
        let mut states: Vec<_> = (0..n).map(|_| self.host.new_state()).collect();
        let mut rows = vec![0f32; n * vocab];
        for pos in 0..self.config.seq_len {
            if done.iter().all(|&d| d) {
                break;
            }
            self.host
                .step_rows(&next, pos, &mut states, &done, &mut rows);
            for i in 0..n {
                if done[i] {
                    continue;
                }
                if pos + 1 < tokens[i].len() {
                    next[i] = tokens[i][pos + 1];
                    continue;
                }
                let row = &mut rows[i * vocab..(i + 1) * vocab];
                for &b in &banned {
                    row[b as usize] = f32::NEG_INFINITY;
                }
                let id = sample_row(row, opts, &mut rngs[i]);
                if id == BOS || id == EOS {
                    done[i] = true;
                    continue;
                }
                let piece = self.tokenizer.piece_bytes(next[i], id);
                out[i].extend_from_slice(piece);
                written[i] += String::from_utf8_lossy(piece).chars().count();
                next[i] = id;
                let ends_sentence = piece
                    .iter()
                    .rev()
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|&b| is_sentence_end(b as char));
                if written[i] >= opts.max_chars
                    || (opts.stop_at_sentence_end && written[i] >= min_len && ends_sentence)
                {
                    done[i] = true;
                }
            }
        }
        Ok(out
            .iter()
            .map(|b| finish(&String::from_utf8_lossy(b), opts))
            .collect())
    }

    /// Next-token logits of the host decoder after reading `ids` from position 0 (a check of
    /// the host decoder against candle's `Llama`).
    pub fn host_logits(&self, ids: &[u32]) -> Vec<Vec<f32>> {
        let mut s = self.host.new_state();
        let mut out = Vec::with_capacity(ids.len());
        for (pos, &id) in ids.iter().enumerate() {
            let mut l = vec![0f32; self.config.vocab_size];
            self.host.step(id, pos, &mut s, &mut l);
            out.push(l);
        }
        out
    }

    /// Next-token logits of candle's `Llama` for `ids` read from position 0.
    pub fn candle_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        let input = Tensor::new(ids, self.vb.device())?.unsqueeze(0)?;
        let mut cache = Cache::new(false, &self.config, self.vb.pp("rot"))?;
        Ok(self
            .model
            .forward(&input, 0, &mut cache)?
            .squeeze(0)?
            .to_vec2()?)
    }

    /// Bits per character of stories, each read from BOS: the summed NLL of the story's tokens
    /// over its characters. A story longer than the model's positions is read in windows that
    /// overlap by half, each new token scored once with at least half a window of context.
    pub fn evaluate(&self, stories: &[String]) -> Result<EvalResult> {
        let mut nats = 0f64;
        let mut chars = 0usize;
        let window = self.config.seq_len;
        let stride = (window / 2).max(1);
        for story in stories {
            let ids = self.tokenizer.encode(story, true);
            chars += story.chars().count();
            // Position p of `ids` (p ≥ 1) is scored from the window that holds p - 1 and p.
            let mut scored = 1usize;
            let mut start = 0usize;
            while scored < ids.len() {
                let end = (start + window).min(ids.len());
                let input = Tensor::new(&ids[start..end], self.vb.device())?.unsqueeze(0)?;
                let mut cache = Cache::new(false, &self.config, self.vb.pp("rot"))?;
                let logits = self.model.forward(&input, 0, &mut cache)?.squeeze(0)?;
                let logp = candle_nn::ops::log_softmax(&logits, 1)?.to_vec2::<f32>()?;
                for p in scored.max(start + 1)..end {
                    nats -= logp[p - 1 - start][ids[p] as usize] as f64;
                }
                scored = end;
                if end == ids.len() {
                    break;
                }
                start += stride;
            }
        }
        let bits_per_char = if chars == 0 {
            0.0
        } else {
            nats / std::f64::consts::LN_2 / chars as f64
        };
        Ok(EvalResult {
            bits_per_char,
            chars,
        })
    }
}

/// The story a prompt opens: the prompt, a space, and what the model wrote after it.
fn join_prompt(prompt: &str, story: &str) -> String {
    match (prompt.is_empty(), story.is_empty()) {
        (true, _) => story.to_string(),
        (false, true) => prompt.to_string(),
        (false, false) if story.starts_with([',', '.', '!', '?', ';', ':']) => {
            format!("{prompt}{story}")
        }
        (false, false) => format!("{prompt} {story}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_every_hashtag() {
        assert_eq!(prompt_for_tags::<&str>(&[]), "");
        assert_eq!(
            prompt_for_tags(&["#dog"]),
            "Once upon a time, there was a dog."
        );
        assert_eq!(
            prompt_for_tags(&["#dog", "#beach"]),
            "Once upon a time, there was a dog. One day, the dog saw a beach."
        );
        assert_eq!(
            prompt_for_tags(&["owl", "apple", "tree"]),
            "Once upon a time, there was an owl. One day, the owl saw an apple and a tree."
        );
    }

    #[test]
    fn corpus_prompts_vary_and_name_every_word() {
        use rand::SeedableRng;
        let mut rng = StdRng::seed_from_u64(3);
        let mut shapes = std::collections::HashSet::new();
        for _ in 0..50 {
            let p = corpus_prompt(&["dog", "beach"], &mut rng);
            assert!(p.contains("dog") && p.contains("beach"), "{p}");
            shapes.insert(p.split_whitespace().nth(1).unwrap_or("").to_string());
        }
        assert!(shapes.len() >= 3, "{shapes:?}");
        assert_eq!(corpus_prompt::<&str>(&[], &mut rng), "");
    }

    #[test]
    fn the_new_export_format_is_refused_with_a_hint() {
        let mut b = NEW_EXPORT_MAGIC.to_le_bytes().to_vec();
        b.resize(64, 0);
        let e = parse_header(&b).unwrap_err().to_string();
        assert!(e.contains("--version 0"), "{e}");
    }

    #[test]
    fn joins_prompt_and_story() {
        assert_eq!(join_prompt("A dog.", "It ran."), "A dog. It ran.");
        assert_eq!(join_prompt("", "It ran."), "It ran.");
        assert_eq!(join_prompt("A dog", ", big."), "A dog, big.");
    }
}
