//! The hashtag-seeded story model: a character-level LSTM language model that writes the ~500
//! characters following a hashtag, many seeds at once.
//!
//! - [`codec`]: how a model spells text (alphabet or subword pieces), the document separator.
//! - [`charlm`]: the model (embedding, stacked LSTM, output layer).
//! - [`eval`]: bits per character on held-out stories.
//! - [`generate`]: batched sampling through candle tensors (training-time checks, GPU).
//! - [`engine`]: the host story engine: a fused LSTM step over a pool of refilled slots (CPU).
//! - [`service`]: that engine on its own thread, one pool shared by every caller.
//! - [`checkpoint`]: safetensors + JSON checkpoints.
//! - [`llama2c`], [`llama_tokenizer`]: llama2.c-format transformer story models and their
//!   tokenizer (`stories15M.bin` and kin), prompted from the hashtags.
use std::path::{Path, PathBuf};

use candle_core::Device;

pub mod charlm;
pub mod checkpoint;
pub mod codec;
pub mod copy;
pub mod engine;
pub mod eval;
pub mod generate;
pub mod keywords;
pub mod llama2c;
pub mod llama_host;
pub mod llama_tokenizer;
pub mod service;
pub mod subword;

pub use charlm::{CharLm, CharLmConfig};
pub use codec::{Alphabet, Codec, Conditioning};
pub use eval::EvalResult;
pub use generate::{stream_seed, GenerateOptions};
pub use keywords::KeywordExtractor;
pub use llama2c::Llama2cStoryModel;
pub use llama_tokenizer::LlamaTokenizer;

use crate::Result;

/// Any story model hashtale runs: the character LSTM of a checkpoint directory, or a
/// llama2.c-format transformer (a `.bin` checkpoint and its tokenizer).
#[derive(Debug, Clone)]
pub enum StoryWriter {
    // Boxed: both are large and the enum is passed around.
    CharLm(Box<StoryModel>),
    Llama2c(Box<Llama2cStoryModel>),
}

impl StoryWriter {
    /// Loads `path`: a directory is a char-LSTM checkpoint, a file a llama2.c checkpoint, read
    /// with `tokenizer` or else the `tokenizer.bin` or single `tok*.bin` beside it.
    pub fn load(path: &Path, tokenizer: Option<&Path>, device: &Device) -> Result<Self> {
        if path.is_dir() {
            return Ok(StoryWriter::CharLm(Box::new(StoryModel::load(
                path, device,
            )?)));
        }
        let tok = match tokenizer {
            Some(t) => t.to_path_buf(),
            None => llama_tokenizer_beside(path)?,
        };
        Ok(StoryWriter::Llama2c(Box::new(Llama2cStoryModel::load(
            path, &tok, device,
        )?)))
    }

    /// `story-charlm-…` or `story-llama2c-<name>-…`: what results record as their writer.
    pub fn version(&self) -> String {
        match self {
            StoryWriter::CharLm(m) => m.version(),
            StoryWriter::Llama2c(m) => m.version(),
        }
    }

    /// The keyword table of a hashtag-conditioned char model.
    pub fn keywords(&self) -> Option<&KeywordExtractor> {
        match self {
            StoryWriter::CharLm(m) => m.keywords(),
            StoryWriter::Llama2c(_) => None,
        }
    }

    /// The hashtags a story is written about, from an image's ranked hashtags (a llama2.c
    /// prompt names up to three).
    pub fn story_tags<S: AsRef<str>>(&self, ranked: &[S]) -> Vec<String> {
        match self {
            StoryWriter::CharLm(m) => m.story_tags(ranked),
            StoryWriter::Llama2c(_) => keywords::prefix_tags(ranked).into_iter().take(3).collect(),
        }
    }

    /// The text the model reads before the story (recorded as the story's seed).
    pub fn prompt_for<S: AsRef<str>>(&self, tags: &[S]) -> String {
        match self {
            StoryWriter::CharLm(m) => m.prompt_for(tags),
            StoryWriter::Llama2c(_) => llama2c::prompt_for_tags(tags),
        }
    }

    /// One story per hashtag list, all advanced together; list i samples from RNG stream
    /// `streams[i]`.
    pub fn generate_for_tags(
        &self,
        tag_lists: &[Vec<String>],
        streams: &[u64],
        opts: &GenerateOptions,
    ) -> Result<Vec<String>> {
        match self {
            StoryWriter::CharLm(m) => m.generate_for_tags(tag_lists, streams, opts),
            StoryWriter::Llama2c(m) => m.generate_for_tags(tag_lists, streams, opts),
        }
    }

    /// Bits per character of stories read without hashtags.
    pub fn evaluate(&self, stories: &[String]) -> Result<EvalResult> {
        match self {
            StoryWriter::CharLm(m) => m.evaluate(stories),
            StoryWriter::Llama2c(m) => m.evaluate(stories),
        }
    }
}

/// The tokenizer that ships beside a llama2.c checkpoint: `tokenizer.bin`, else the one
/// `tok*.bin` in its folder (llama2.c's custom vocabularies are `tok512.bin`, `tok4096.bin`).
fn llama_tokenizer_beside(checkpoint: &Path) -> Result<PathBuf> {
    let dir = checkpoint.parent().unwrap_or(Path::new("."));
    let named = dir.join("tokenizer.bin");
    if named.is_file() {
        return Ok(named);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| crate::Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("tok") && n.ends_with(".bin"))
        })
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(crate::Error::msg(format!(
            "{}: no tokenizer.bin or tok*.bin beside the llama2.c checkpoint; name one",
            checkpoint.display()
        ))),
        _ => Err(crate::Error::msg(format!(
            "{}: several tok*.bin beside the checkpoint; name the tokenizer",
            checkpoint.display()
        ))),
    }
}

/// A loaded story model, ready to write stories.
#[derive(Debug, Clone)]
pub struct StoryModel {
    lm: CharLm,
    alphabet: Codec,
    meta: checkpoint::CheckpointMeta,
    hash: String,
    /// The keyword table of a hashtag-conditioned model.
    keywords: Option<KeywordExtractor>,
    /// The host engine's copy of the weights (CPU models); `None` writes through tensors.
    host: Option<std::sync::Arc<engine::HostLm>>,
    /// The engine thread every clone of this model shares (with `host`).
    service: Option<std::sync::Arc<service::StoryService>>,
}

/// Stories the host engine advances together by default: enough rows that a step is a
/// matrix-matrix product, few enough that a batch of images does not wait on a long queue.
pub const DEFAULT_STORY_SLOTS: usize = 64;

impl StoryModel {
    /// Loads a checkpoint directory (`model.safetensors` + `config.json`).
    pub fn load(dir: &Path, device: &Device) -> Result<StoryModel> {
        let (mut lm, meta, hash) = checkpoint::load(dir, device)?;
        let keywords = match meta.conditioning {
            Conditioning::PseudoTag => None,
            Conditioning::Keywords => {
                Some(KeywordExtractor::load(&dir.join(keywords::KEYWORDS_FILE))?)
            }
        };
        // Keyword ids are ranks in keywords.tsv: the file must be the one the table was made with.
        if let Some(ex) = keywords.as_ref().filter(|_| lm.has_keywords()) {
            if ex.len() != meta.model.keywords {
                return Err(crate::Error::msg(format!(
                    "{}: {} keywords in {}, but the model's keyword table has {} rows",
                    dir.display(),
                    ex.len(),
                    keywords::KEYWORDS_FILE,
                    meta.model.keywords
                )));
            }
        }
        let alphabet = checkpoint::read_codec(dir, &meta)?;
        if lm.has_copy() {
            let ex = keywords
                .as_ref()
                .ok_or_else(|| crate::Error::msg("a keyword-copy model without keywords"))?;
            lm.set_copy_table(keywords::copy_table(ex, &alphabet))?;
        }
        let (host, service) = match device {
            Device::Cpu => {
                let host = std::sync::Arc::new(engine::HostLm::from_lm(&lm)?);
                let service = service::StoryService::start(
                    host.clone(),
                    alphabet.clone(),
                    DEFAULT_STORY_SLOTS,
                )?;
                (Some(host), Some(std::sync::Arc::new(service)))
            }
            _ => (None, None),
        };
        Ok(StoryModel {
            lm,
            alphabet,
            meta,
            hash,
            keywords,
            host,
            service,
        })
    }

    /// Writes through candle tensors step by step (the path a GPU model takes) instead of the
    /// host engine: for comparisons and benchmarks.
    pub fn with_tensor_engine(mut self) -> Self {
        self.host = None;
        self.service = None;
        self
    }

    /// How many stories the host engine advances together (at least 1): a new engine thread for
    /// this model (clones made before keep the old one).
    pub fn set_slots(&mut self, slots: usize) -> Result<()> {
        if let Some(host) = &self.host {
            let s = service::StoryService::start(host.clone(), self.alphabet.clone(), slots)?;
            self.service = Some(std::sync::Arc::new(s));
        }
        Ok(())
    }

    /// Whether stories are written by the host engine.
    pub fn uses_host_engine(&self) -> bool {
        self.service.is_some()
    }

    /// Writes one story per prompt, on the host engine when there is one.
    fn write(
        &self,
        prompts: &[String],
        keywords: Option<&[Vec<u32>]>,
        streams: &[u64],
        opts: &GenerateOptions,
    ) -> Result<Vec<String>> {
        let opts = &self.meta.sampling.apply(opts);
        let Some(service) = &self.service else {
            return generate::generate(&self.lm, &self.alphabet, prompts, keywords, streams, opts);
        };
        if keywords.is_some_and(|k| k.len() != prompts.len()) {
            return Err(crate::Error::msg("one keyword set per prompt"));
        }
        let requests: Vec<engine::StoryRequest> = prompts
            .iter()
            .zip(streams)
            .enumerate()
            .map(|(i, (p, &stream))| engine::StoryRequest {
                prompt: self.alphabet.encode(p),
                keywords: keywords.map(|k| k[i].clone()).unwrap_or_default(),
                stream,
            })
            .collect();
        service.write(requests, opts)
    }

    /// Whether the model was trained on hashtag prefixes (see [`keywords`]); otherwise it is the
    /// plain model, seeded the seed's way with one hashtag.
    pub fn is_conditioned(&self) -> bool {
        self.meta.conditioning == Conditioning::Keywords
    }

    /// The keyword table of a conditioned model.
    pub fn keywords(&self) -> Option<&KeywordExtractor> {
        self.keywords.as_ref()
    }

    /// The hashtags that condition a story, from an image's ranked hashtags: a conditioned model
    /// takes up to [`keywords::MAX_KEYWORDS`] of them, the plain model the top one.
    pub fn story_tags<S: AsRef<str>>(&self, ranked: &[S]) -> Vec<String> {
        let tags = keywords::prefix_tags(ranked);
        if self.is_conditioned() {
            tags
        } else {
            tags.into_iter().take(1).collect()
        }
    }

    /// The prompt for some hashtags: the prefix line for a conditioned model, `#a #b ` for the
    /// plain one.
    pub fn prompt_for<S: AsRef<str>>(&self, tags: &[S]) -> String {
        let tags = keywords::prefix_tags(tags);
        if self.is_conditioned() {
            generate::conditioned_prompt(&tags)
        } else {
            let seed: Vec<String> = tags.iter().map(|t| format!("#{t}")).collect();
            generate::prompt(&seed.join(" "))
        }
    }

    /// One story per hashtag list, all advanced together; list i samples from RNG stream
    /// `streams[i]`. An empty list writes an unprompted story.
    pub fn generate_for_tags(
        &self,
        tag_lists: &[Vec<String>],
        streams: &[u64],
        opts: &GenerateOptions,
    ) -> Result<Vec<String>> {
        if tag_lists.len() != streams.len() {
            return Err(crate::Error::msg("one RNG stream per hashtag list"));
        }
        let prompts: Vec<String> = tag_lists.iter().map(|t| self.prompt_for(t)).collect();
        let keywords = self.keyword_ids(tag_lists);
        self.write(&prompts, keywords.as_deref(), streams, opts)
    }

    /// One story per seed (usually a hashtag such as `#friend`), all advanced together; seed i
    /// samples from RNG stream i of `opts.seed`, so the result equals one-at-a-time calls of
    /// [`StoryModel::generate_streams`] with the same stream numbers.
    pub fn generate_batch(&self, seeds: &[String], opts: &GenerateOptions) -> Result<Vec<String>> {
        let streams: Vec<u64> = (0..seeds.len() as u64).collect();
        self.generate_streams(seeds, &streams, opts)
    }

    /// Like [`StoryModel::generate_batch`] with explicit RNG stream numbers, one per seed.
    pub fn generate_streams(
        &self,
        seeds: &[String],
        streams: &[u64],
        opts: &GenerateOptions,
    ) -> Result<Vec<String>> {
        if seeds.len() != streams.len() {
            return Err(crate::Error::msg("one RNG stream per seed"));
        }
        // A conditioned model reads the seed's hashtags as its prefix line.
        if self.is_conditioned() {
            let tag_lists: Vec<Vec<String>> = seeds
                .iter()
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .collect();
            return self.generate_for_tags(&tag_lists, streams, opts);
        }
        let prompts: Vec<String> = seeds.iter().map(|s| generate::prompt(s)).collect();
        self.write(&prompts, None, streams, opts)
    }

    /// The keyword ids each hashtag list gives a model with a keyword table: the tags of its
    /// prompt that the keyword table knows. `None` for other models.
    fn keyword_ids(&self, tag_lists: &[Vec<String>]) -> Option<Vec<Vec<u32>>> {
        let ex = self.keywords.as_ref().filter(|_| self.lm.has_keywords())?;
        Some(
            tag_lists
                .iter()
                .map(|t| ex.ids(&keywords::prefix_tags(t)))
                .collect(),
        )
    }

    /// Bits per character on stories (see [`eval::evaluate`]).
    pub fn evaluate(&self, stories: &[String]) -> Result<EvalResult> {
        eval::evaluate(&self.lm, &self.alphabet, stories)
    }

    /// Bits per character on stories, each read after the prompt of its hashtags (the prompt is
    /// context, not scored): the same characters as [`StoryModel::evaluate`] scores.
    pub fn evaluate_with_tags(&self, docs: &[(Vec<String>, String)]) -> Result<EvalResult> {
        let tag_lists: Vec<Vec<String>> = docs.iter().map(|(t, _)| t.clone()).collect();
        let keywords = self.keyword_ids(&tag_lists);
        let docs: Vec<(String, String)> = docs
            .iter()
            .map(|(tags, story)| {
                // The lane already holds the document start, so the prompt's separator is dropped.
                let p = self.prompt_for(tags);
                (p[codec::DOC_SEP.len()..].to_string(), story.clone())
            })
            .collect();
        eval::evaluate_docs(&self.lm, &self.alphabet, &docs, keywords.as_deref())
    }

    /// Model name and a short hash of its weights file, e.g. `story-charlm-1a2b3c4d`.
    pub fn version(&self) -> String {
        crate::hash::version(&self.meta.name, &self.hash)
    }

    /// How the model spells text (characters or subword pieces).
    pub fn codec(&self) -> &Codec {
        &self.alphabet
    }

    pub fn lm(&self) -> &CharLm {
        &self.lm
    }

    pub fn meta(&self) -> &checkpoint::CheckpointMeta {
        &self.meta
    }
}
