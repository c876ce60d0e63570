//! Training (truncated BPTT over contiguous lanes of a shuffled document stream); dev bits per
//! character come from the model crate's `story::eval`.
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use hashtale_models::nn::init::reinit_in_name_order;
use hashtale_models::story::charlm::{CharLm, CharLmConfig, WindowKeywords};
use hashtale_models::story::checkpoint::{self, CheckpointMeta, FORMAT};
use hashtale_models::story::codec::{Alphabet, Codec, Conditioning, FALLBACK};
use hashtale_models::story::copy;
use hashtale_models::story::eval::{evaluate_docs, EvalResult};
use hashtale_models::story::keywords::{self, KeywordExtractor};
use hashtale_models::story::subword::SubwordVocab;

use super::corpus::{self, CorpusSpec, Prefixer};
use super::rmsprop::{clip_grad_norm, RmsProp, RmsPropConfig};
use crate::{Error, Result};

/// Everything a training run needs; stored in the checkpoint for provenance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Model name written into the checkpoint.
    pub name: String,
    pub corpora: Vec<CorpusSpec>,
    pub emb: usize,
    pub hidden: usize,
    pub layers: usize,
    pub dropout: f32,
    /// Truncated BPTT length (characters per window).
    pub bptt: usize,
    pub batch: usize,
    pub optim: RmsPropConfig,
    /// Passes over the (weighted) training stream; may be fractional.
    pub epochs: f64,
    /// Hard cap on optimizer steps.
    pub max_steps: Option<usize>,
    /// Wall-clock budget for the training steps, in minutes: the step count is re-planned from
    /// the measured step time so the learning-rate schedule still ends on time.
    pub time_budget_min: Option<f64>,
    /// Linear warm-up steps of the learning rate.
    pub warmup_steps: usize,
    /// Cosine decay down to this fraction of the learning rate (1.0: constant).
    pub min_lr_frac: f64,
    /// Global gradient-norm clip (0: none).
    pub clip: f64,
    /// Probability that a training story starts with a pseudo-hashtag from its own words
    /// ([`Conditioning::PseudoTag`] only).
    pub tag_prob: f64,
    /// How stories are prefixed: the plain model's pseudo-hashtag or the keyword prefix.
    #[serde(default)]
    pub conditioning: Conditioning,
    /// Hashtag vocabularies the keywords come from ([`Conditioning::Keywords`]); see
    /// [`keywords::read_vocab`] for the formats.
    #[serde(default)]
    pub keyword_vocab: Vec<PathBuf>,
    /// Chance that a keyword-conditioned story is trained without its prefix.
    #[serde(default = "default_prefix_drop")]
    pub prefix_drop: f64,
    /// Width of the keyword vectors every step reads ([`Conditioning::Keywords`]; 0: the model
    /// reads the hashtags only as the prefix line).
    #[serde(default)]
    pub keyword_dim: usize,
    /// Keyword copy ([`CharLmConfig::copy`]): subword models with a keyword table only.
    #[serde(default)]
    pub keyword_copy: bool,
    /// Fraction of each corpus's stories held out as dev.
    pub dev_frac: f64,
    /// Seed of the dev split; fixed apart from `seed` so every run holds out the same stories.
    pub split_seed: u64,
    /// Characters seen fewer times than this in training map to the fallback.
    pub min_char_count: usize,
    /// Pieces of a byte-level BPE vocabulary trained on the training stories (0: one id per
    /// character, the char-LSTM).
    #[serde(default)]
    pub subword_vocab: usize,
    pub seed: u64,
    /// Steps between dev evaluations (and checkpoints).
    pub eval_every: usize,
    /// Dev characters per corpus scored during training (the final evaluation scores all).
    pub eval_chars_during: usize,
    /// Save weights as f16.
    pub f16: bool,
    /// The sampling settings the checkpoint recommends (stored in its `config.json`).
    #[serde(default)]
    pub sampling: checkpoint::SamplingDefaults,
}

fn default_prefix_drop() -> f64 {
    0.1
}

impl TrainConfig {
    /// The seed's setting: embedding 1024, 2 LSTM layers (1024 units, the seed gives no separate
    /// width), RMSProp lr 0.01, 100 epochs, no dropout, no clipping, constant learning rate.
    pub fn reference() -> Self {
        TrainConfig {
            name: "story-seed-ref".into(),
            corpora: Vec::new(),
            emb: 1024,
            hidden: 1024,
            layers: 2,
            dropout: 0.0,
            bptt: 100,
            batch: 32,
            optim: RmsPropConfig::default(),
            epochs: 100.0,
            max_steps: None,
            time_budget_min: None,
            warmup_steps: 0,
            min_lr_frac: 1.0,
            clip: 0.0,
            tag_prob: 0.7,
            conditioning: Conditioning::PseudoTag,
            keyword_vocab: Vec::new(),
            prefix_drop: default_prefix_drop(),
            keyword_dim: 0,
            keyword_copy: false,
            dev_frac: 0.1,
            split_seed: 20_160_523,
            min_char_count: 3,
            subword_vocab: 0,
            seed: 42,
            eval_every: 200,
            eval_chars_during: 30_000,
            f16: false,
            sampling: Default::default(),
        }
    }

    /// hashtale's default: a narrower model that trains many more characters in the same time,
    /// dropout, longer BPTT windows, a lower learning rate with warm-up and cosine decay, and
    /// gradient clipping.
    pub fn default_story() -> Self {
        TrainConfig {
            name: "story-charlm".into(),
            emb: 64,
            hidden: 384,
            dropout: 0.1,
            bptt: 100,
            optim: RmsPropConfig {
                lr: 2e-3,
                decay: 0.95,
                eps: 1e-8,
                momentum: 0.0,
            },
            epochs: 20.0,
            warmup_steps: 30,
            min_lr_frac: 0.05,
            clip: 1.0,
            ..Self::reference()
        }
    }

    /// The model's sizes for an alphabet of `vocab` characters and a keyword table of `keywords`
    /// words (used only with [`TrainConfig::keyword_dim`] > 0).
    fn model_config(&self, vocab: usize, keywords: usize) -> CharLmConfig {
        let table = self.keyword_dim > 0 && keywords > 0;
        CharLmConfig {
            vocab,
            emb: self.emb,
            hidden: self.hidden,
            layers: self.layers,
            dropout: self.dropout,
            keywords: if table { keywords } else { 0 },
            keyword_dim: if table { self.keyword_dim } else { 0 },
            copy: table && self.keyword_copy,
        }
    }

    /// Learning rate at `step` (0-based) of `total`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let base = self.optim.lr;
        if step < self.warmup_steps {
            return base * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
        let p = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = self.min_lr_frac.clamp(0.0, 1.0);
        base * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
    }
}

/// Deterministic weights from `seed` (candle's CPU RNG cannot be seeded): uniform ±1/√hidden for
/// the LSTM and output weights, zero biases with forget-gate bias 1, unit-variance embeddings.
fn init_weights(varmap: &VarMap, cfg: &CharLmConfig, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let a = 1.0 / (cfg.hidden as f32).sqrt();
    reinit_in_name_order(varmap, |name, dims| {
        let n: usize = dims.iter().product();
        if name.ends_with(".b") {
            (0..n)
                .map(|i| {
                    if (cfg.hidden..2 * cfg.hidden).contains(&i) {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect()
        } else if name.ends_with("bias") || name.ends_with(".w_k") || name.starts_with("copy") {
            // Keyword inputs and the copy gate start at zero (see `LstmCell::story_layout`): a
            // new model copies nothing until it learns to.
            vec![0.0; n]
        } else if name.starts_with("embed") || name.starts_with("keywords") {
            let r = 3f32.sqrt();
            (0..n).map(|_| rng.gen_range(-r..r)).collect()
        } else {
            (0..n).map(|_| rng.gen_range(-a..a)).collect()
        }
    })
}

/// The keyword vectors of one training window: the documents its lanes touch, each lane's
/// document per step. `None` for a model without a keyword table.
fn window_keywords(
    lm: &CharLm,
    stream: &corpus::Stream,
    lane_len: usize,
    offset: usize,
    batch: usize,
    bptt: usize,
) -> Result<Option<WindowKeywords>> {
    if !lm.has_keywords() {
        return Ok(None);
    }
    let mut docs: Vec<u32> = Vec::new();
    let mut per_step = vec![vec![0u32; batch]; bptt];
    for (t, row) in per_step.iter_mut().enumerate() {
        for (b, slot) in row.iter_mut().enumerate() {
            let d = stream.doc[b * lane_len + offset + t];
            let local = match docs.iter().position(|&x| x == d) {
                Some(i) => i,
                None => {
                    docs.push(d);
                    docs.len() - 1
                }
            };
            *slot = local as u32;
        }
    }
    let sets: Vec<Vec<u32>> = docs
        .iter()
        .map(|&d| stream.keywords[d as usize].clone())
        .collect();
    let Some(mut w) = WindowKeywords::new(lm, &sets, &per_step)? else {
        return Ok(None);
    };
    if let Some(table) = lm.copy_table() {
        // Row b·T + t: what continues a hashtag lane b has begun by step t.
        let mut rows = Vec::with_capacity(batch * bptt);
        for b in 0..batch {
            for t in 0..bptt {
                let p = b * lane_len + offset + t;
                let h = copy::history(&stream.ids, &stream.doc, b * lane_len, p, table.longest());
                rows.push(table.next(&stream.keywords[stream.doc[p] as usize], h));
            }
        }
        w.copy_next = lm.copy_next_mask(&rows)?;
    }
    Ok(Some(w))
}

/// What a training run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub steps: usize,
    pub chars_seen: usize,
    pub train_seconds: f64,
    /// Mean training loss (nats/char) over the last logged interval.
    pub final_train_loss: f64,
    /// Final dev bits/char per corpus file name (full dev split, model as saved in `out`).
    pub dev: Vec<(String, EvalResult)>,
    pub out: PathBuf,
}

struct Corpus {
    name: String,
    train: Vec<String>,
    dev: Vec<String>,
    weight: f64,
}

fn load_corpora(cfg: &TrainConfig) -> Result<Vec<Corpus>> {
    if cfg.corpora.is_empty() {
        return Err(Error::msg("no corpus given"));
    }
    cfg.corpora
        .iter()
        .map(|spec| {
            let stories = corpus::read_stories(&spec.path)?;
            if stories.is_empty() {
                return Err(Error::msg(format!("{}: no stories", spec.path.display())));
            }
            let (train, dev) = corpus::split_dev(&stories, cfg.dev_frac, cfg.split_seed);
            let name = spec
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| spec.path.display().to_string());
            Ok(Corpus {
                name,
                train,
                dev,
                weight: spec.weight,
            })
        })
        .collect()
}

/// How many of the first stories of `dev` make up about `max_chars` characters.
fn head_len(dev: &[String], max_chars: usize) -> usize {
    let mut total = 0;
    dev.iter()
        .take_while(|s| {
            let go = total < max_chars;
            total += s.len();
            go
        })
        .count()
}

/// Trains a story model and writes the best checkpoint (by dev bits/char of the first corpus)
/// to `out`, the latest to `out/last`. `init` starts from a checkpoint's weights (fine-tuning;
/// the alphabet and sizes must match).
pub fn train(cfg: &TrainConfig, out: &Path, init: Option<&Path>) -> Result<TrainReport> {
    let device = Device::Cpu;
    let corpora = load_corpora(cfg)?;
    let alphabet = match init {
        Some(dir) => checkpoint::read_codec(dir, &checkpoint::read_meta(dir)?)?,
        None if cfg.subword_vocab > 0 => {
            let texts: Vec<&str> = corpora
                .iter()
                .flat_map(|c| c.train.iter().map(|s| s.as_str()))
                .collect();
            Codec::Subword(Box::new(SubwordVocab::train(&texts, cfg.subword_vocab)?))
        }
        None => Codec::Chars(Alphabet::from_texts(
            corpora
                .iter()
                .flat_map(|c| c.train.iter().map(|s| s.as_str())),
            cfg.min_char_count,
        )),
    };
    let extractor = match cfg.conditioning {
        Conditioning::PseudoTag => None,
        Conditioning::Keywords => {
            if cfg.keyword_vocab.is_empty() {
                return Err(Error::msg(
                    "keyword conditioning needs at least one hashtag vocabulary (keyword_vocab)",
                ));
            }
            let train_stories: Vec<String> = corpora
                .iter()
                .flat_map(|c| c.train.iter().cloned())
                .collect();
            // Fine-tuning keeps the checkpoint's own table: its rows are the keyword weights'
            // rows, and a refit on other stories (a regenerated corpus) would renumber them.
            let init_table = init
                .map(|dir| dir.join(keywords::KEYWORDS_FILE))
                .filter(|p| p.exists());
            let ex = match init_table {
                Some(p) => KeywordExtractor::load(&p)?,
                None => {
                    let mut vocab = Vec::new();
                    for p in &cfg.keyword_vocab {
                        vocab.extend(keywords::read_vocab(p)?);
                    }
                    KeywordExtractor::fit(vocab, &train_stories)
                }
            };
            let with = train_stories
                .iter()
                .filter(|s| !ex.extract(s).is_empty())
                .count();
            tracing::info!(
                "keywords: {} vocabulary words; {with} of {} training stories have at least one",
                ex.len(),
                train_stories.len()
            );
            Some(ex)
        }
    };
    if cfg.keyword_copy && !matches!(alphabet, Codec::Subword(_)) {
        return Err(Error::msg(
            "keyword copy needs a subword vocabulary (subword_vocab > 0)",
        ));
    }
    let mcfg = cfg.model_config(alphabet.len(), extractor.as_ref().map_or(0, |e| e.len()));
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let mut lm = CharLm::new(&mcfg, vb)?;
    let copy_table = extractor
        .as_ref()
        .map(|ex| keywords::copy_table(ex, &alphabet))
        .unwrap_or_default();
    lm.set_copy_table(copy_table.clone())?;
    init_weights(&varmap, &mcfg, cfg.seed)?;
    if let Some(dir) = init {
        // A checkpoint without a keyword table (or copy gate) leaves the new parts as
        // initialised.
        let meta = checkpoint::load_into(dir, &varmap, |name| {
            name.starts_with("keywords.") || name.ends_with(".w_k") || name.starts_with("copy")
        })?;
        if meta.model.vocab != mcfg.vocab {
            return Err(Error::msg("init checkpoint's alphabet does not match"));
        }
        if meta.model.keywords > 0 && meta.model.keywords != mcfg.keywords {
            return Err(Error::msg("init checkpoint's keyword table does not match"));
        }
    }
    let vars = varmap.all_vars();
    let n_params: usize = vars.iter().map(|v| v.elem_count()).sum();
    let mut opt = RmsProp::new(vars.clone(), cfg.optim)?;
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed);
    let prefixer = match &extractor {
        None => Prefixer::PseudoTag(cfg.tag_prob),
        Some(ex) => Prefixer::Keywords {
            extractor: ex,
            drop_prob: cfg.prefix_drop,
        },
    };
    // Dev documents of each corpus, made once: a conditioned model reads each story after its own
    // full keyword prefix.
    let dev_docs: Vec<Vec<(String, String)>> = corpora
        .iter()
        .map(|c| {
            c.dev
                .iter()
                .map(|s| {
                    let ctx = extractor
                        .as_ref()
                        .map(|ex| keywords::format_prefix(&ex.extract(s)))
                        .unwrap_or_default();
                    (ctx, s.clone())
                })
                .collect()
        })
        .collect();
    let dev_keywords: Vec<Vec<Vec<u32>>> = corpora
        .iter()
        .map(|c| {
            c.dev
                .iter()
                .map(|s| {
                    extractor
                        .as_ref()
                        .map(|ex| ex.ids(&ex.extract(s)))
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    let save_checkpoint = |dir: &Path, meta: &CheckpointMeta| -> Result<()> {
        checkpoint::save(dir, &varmap, meta, cfg.f16)?;
        if let Codec::Subword(v) = &alphabet {
            let p = dir.join(checkpoint::TOKENIZER_FILE);
            std::fs::write(&p, v.to_json()?).map_err(|e| Error::io(&p, e))?;
        }
        if let Some(ex) = &extractor {
            ex.save(&dir.join(keywords::KEYWORDS_FILE))?;
        }
        Ok(())
    };
    let weighted: Vec<(Vec<String>, f64)> = corpora
        .iter()
        .map(|c| (c.train.clone(), c.weight))
        .collect();
    let expected_chars: f64 = corpora
        .iter()
        .map(|c| {
            c.weight
                * c.train
                    .iter()
                    .map(|s| s.chars().count() + 12)
                    .sum::<usize>() as f64
        })
        .sum();
    // Steps are planned in ids: characters for the char model, fewer for subwords.
    let ids_per_char = {
        let sample: Vec<&String> = corpora
            .iter()
            .flat_map(|c| c.train.iter().take(300))
            .collect();
        let chars: usize = sample.iter().map(|s| s.chars().count()).sum();
        let ids: usize = sample.iter().map(|s| alphabet.encode(s).len()).sum();
        if chars == 0 {
            1.0
        } else {
            ids as f64 / chars as f64
        }
    };
    let expected_chars = expected_chars * ids_per_char;
    let per_step = (cfg.batch * cfg.bptt) as f64;
    let mut total = ((cfg.epochs * expected_chars / per_step).ceil() as usize).max(1);
    if let Some(m) = cfg.max_steps {
        total = total.min(m);
    }
    tracing::info!(
        "story LM: {} {} ids, {n_params} parameters, ~{:.0} ids/epoch, planned {total} steps",
        alphabet.len(),
        alphabet.kind(),
        expected_chars
    );
    for c in &corpora {
        tracing::info!(
            "  {}: {} train / {} dev stories, weight {}",
            c.name,
            c.train.len(),
            c.dev.len(),
            c.weight
        );
    }
    let pb = ProgressBar::new(total as u64);
    pb.set_draw_target(ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let meta_base = CheckpointMeta {
        format: FORMAT.into(),
        name: cfg.name.clone(),
        model: mcfg.clone(),
        alphabet: match &alphabet {
            Codec::Chars(a) => a.to_string_repr(),
            Codec::Subword(_) => String::new(),
        },
        subword: matches!(alphabet, Codec::Subword(_)),
        fallback: FALLBACK,
        dtype: String::new(),
        conditioning: cfg.conditioning,
        train: serde_json::to_value(cfg)?,
        metrics: serde_json::Value::Null,
        sampling: cfg.sampling.clone(),
    };
    let primary_dev = corpora[0].dev.clone();
    let mut best = f64::INFINITY;
    let mut step = 0usize;
    let mut chars_seen = 0usize;
    let mut train_secs = 0f64;
    let mut loss_sum = 0f64;
    let mut loss_n = 0usize;
    let mut last_loss = f64::NAN;
    let started = Instant::now();
    let dev_eval = |lm: &CharLm, step: usize, full: bool| -> Result<Vec<(String, EvalResult)>> {
        corpora
            .iter()
            .zip(dev_docs.iter().zip(&dev_keywords))
            .filter(|(c, _)| !c.dev.is_empty())
            .map(|(c, (docs, kw))| {
                let n = if full {
                    docs.len()
                } else {
                    head_len(&c.dev, cfg.eval_chars_during)
                };
                let r = evaluate_docs(lm, &alphabet, &docs[..n], Some(&kw[..n]))?;
                tracing::info!(
                    "step {step}: dev {} {:.4} bits/char ({} chars{})",
                    c.name,
                    r.bits_per_char,
                    r.chars,
                    if full { "" } else { ", partial" }
                );
                Ok((c.name.clone(), r))
            })
            .collect()
    };
    'outer: loop {
        let stream = corpus::epoch_stream(&weighted, &alphabet, &prefixer, &mut rng);
        let lane_len = (stream.ids.len() - 1) / cfg.batch;
        let windows = lane_len / cfg.bptt;
        if windows == 0 {
            return Err(Error::msg(format!(
                "training text too short: {} chars for batch {} × bptt {}",
                stream.ids.len(),
                cfg.batch,
                cfg.bptt
            )));
        }
        let mut state = lm.zero_state(cfg.batch)?;
        for w in 0..windows {
            let t0 = Instant::now();
            let mut x = Vec::with_capacity(cfg.batch * cfg.bptt);
            let mut y = Vec::with_capacity(cfg.batch * cfg.bptt);
            for b in 0..cfg.batch {
                let s = b * lane_len + w * cfg.bptt;
                x.extend_from_slice(&stream.ids[s..s + cfg.bptt]);
                y.extend_from_slice(&stream.ids[s + 1..s + 1 + cfg.bptt]);
            }
            let x = Tensor::from_vec(x, (cfg.batch, cfg.bptt), &device)?;
            let y = Tensor::from_vec(y, cfg.batch * cfg.bptt, &device)?;
            let kw = window_keywords(&lm, &stream, lane_len, w * cfg.bptt, cfg.batch, cfg.bptt)?;
            opt.set_learning_rate(cfg.lr_at(step, total));
            let (logits, s) = lm.forward(&x, &state, kw.as_ref(), Some(&mut rng))?;
            state = s.detach();
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let mut grads = loss.backward()?;
            clip_grad_norm(&mut grads, &vars, cfg.clip)?;
            opt.step(&grads)?;
            let l = loss.to_scalar::<f32>()? as f64;
            if !l.is_finite() {
                return Err(Error::msg(format!("training diverged at step {step}")));
            }
            loss_sum += l;
            loss_n += 1;
            step += 1;
            chars_seen += cfg.batch * cfg.bptt;
            train_secs += t0.elapsed().as_secs_f64();
            pb.inc(1);
            if step.is_multiple_of(10) || step == total {
                last_loss = loss_sum / loss_n as f64;
                pb.set_message(format!(
                    "loss {last_loss:.3} {:.3} bits/char lr {:.2e}",
                    last_loss / std::f64::consts::LN_2,
                    opt.learning_rate()
                ));
                if step.is_multiple_of(50) {
                    tracing::info!(
                        "step {step}/{total}: train loss {last_loss:.4} ({:.4} bits/char), lr {:.2e}, {:.2} s/step",
                        last_loss / std::f64::consts::LN_2,
                        opt.learning_rate(),
                        train_secs / step as f64
                    );
                }
                loss_sum = 0.0;
                loss_n = 0;
            }
            // Re-plan the step count from the measured speed so the schedule ends in budget.
            if let Some(budget) = cfg.time_budget_min {
                if step == 10 || step.is_multiple_of(50) {
                    let left = budget * 60.0 - train_secs;
                    let more = (left / (train_secs / step as f64)).max(0.0) as usize;
                    let planned = (step + more).max(step);
                    let cap = cfg
                        .max_steps
                        .unwrap_or(usize::MAX)
                        .min(((cfg.epochs * expected_chars / per_step).ceil() as usize).max(1));
                    total = planned.min(cap).max(step);
                    pb.set_length(total as u64);
                }
            }
            let finished = step >= total;
            if step.is_multiple_of(cfg.eval_every.max(1)) || finished {
                let dev = dev_eval(&lm, step, false)?;
                let primary = dev
                    .first()
                    .map(|(_, r)| r.bits_per_char)
                    .unwrap_or(last_loss / std::f64::consts::LN_2);
                let mut meta = meta_base.clone();
                meta.metrics = serde_json::json!({
                    "step": step,
                    "chars_seen": chars_seen,
                    "train_seconds": train_secs,
                    "train_loss": last_loss,
                    "dev_partial": dev,
                });
                save_checkpoint(&out.join("last"), &meta)?;
                if primary < best || primary_dev.is_empty() {
                    best = primary;
                    save_checkpoint(out, &meta)?;
                }
            }
            if finished {
                break 'outer;
            }
        }
    }
    pb.finish_and_clear();
    // Final full dev evaluation of the saved (best) model, recorded in its config.
    let (mut best_lm, mut meta, _) = checkpoint::load(out, &device)?;
    best_lm.set_copy_table(copy_table)?;
    let dev = dev_eval(&best_lm, step, true)?;
    meta.metrics["dev"] = serde_json::to_value(&dev)?;
    std::fs::write(
        out.join(checkpoint::CONFIG_FILE),
        serde_json::to_string_pretty(&meta)?,
    )
    .map_err(|e| Error::io(out, e))?;
    tracing::info!(
        "done: {step} steps, {chars_seen} chars, {:.0} s training ({:.0} s wall)",
        train_secs,
        started.elapsed().as_secs_f64()
    );
    Ok(TrainReport {
        steps: step,
        chars_seen,
        train_seconds: train_secs,
        final_train_loss: last_loss,
        dev,
        out: out.to_path_buf(),
    })
}
