//! Checkpoints: a directory with `model.safetensors` (f32 while training, f16 for shipping) and
//! `config.json` (model sizes, alphabet, how it was trained, dev metrics).
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::charlm::{CharLm, CharLmConfig};
use super::codec::{Alphabet, Codec, Conditioning, FALLBACK};
use super::subword::SubwordVocab;
use crate::{Error, Result};

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const FORMAT: &str = "hashtale-story-charlm/1";
/// The subword vocabulary of a subword checkpoint (`tokenizers` JSON).
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// What `config.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    /// Short model name, used in [`super::StoryModel::version`].
    pub name: String,
    pub model: CharLmConfig,
    /// Every character of the alphabet, in index order (empty for a subword model).
    pub alphabet: String,
    /// The model reads subword pieces of [`TOKENIZER_FILE`] instead of characters.
    #[serde(default)]
    pub subword: bool,
    /// What an unknown character becomes when its lower-case form is unknown too.
    pub fallback: char,
    /// The weights' dtype on disk ("f32" or "f16").
    pub dtype: String,
    /// How the model reads hashtags; a keyword-conditioned checkpoint also holds
    /// [`super::keywords::KEYWORDS_FILE`].
    #[serde(default)]
    pub conditioning: Conditioning,
    /// The training settings (free-form, for provenance).
    #[serde(default)]
    pub train: serde_json::Value,
    /// Dev metrics at save time, e.g. bits/char per corpus.
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// How the model is meant to be sampled where a caller leaves it open.
    #[serde(default, skip_serializing_if = "SamplingDefaults::is_empty")]
    pub sampling: SamplingDefaults,
}

/// A model's own sampling settings (like a `generation_config`): a small subword model writes
/// misspelt joins from the tail of its distribution, which a nucleus cuts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingDefaults {
    /// Used when the caller's `top_p` is `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
}

impl SamplingDefaults {
    pub fn is_empty(&self) -> bool {
        self.top_p.is_none()
    }

    /// `opts` with the model's settings filled in where the caller left them open.
    pub fn apply(&self, opts: &super::GenerateOptions) -> super::GenerateOptions {
        super::GenerateOptions {
            top_p: opts.top_p.or(self.top_p),
            ..*opts
        }
    }
}

impl CheckpointMeta {
    pub fn alphabet(&self) -> Alphabet {
        Alphabet::new(self.alphabet.chars())
    }
}

/// Writes the variables of `varmap` and the metadata into `dir` (created if missing).
pub fn save(dir: &Path, varmap: &VarMap, meta: &CheckpointMeta, f16: bool) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let dtype = if f16 { DType::F16 } else { DType::F32 };
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::msg("varmap lock poisoned"))?;
        for (name, var) in data.iter() {
            tensors.insert(name.clone(), var.as_tensor().to_dtype(dtype)?);
        }
    }
    let mut meta = meta.clone();
    meta.dtype = if f16 { "f16" } else { "f32" }.into();
    // Write to temporary names first so a crash never leaves a half-written checkpoint.
    let wtmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
    candle_core::safetensors::save(&tensors, &wtmp)?;
    let ctmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    std::fs::write(&ctmp, serde_json::to_string_pretty(&meta)?).map_err(|e| Error::io(&ctmp, e))?;
    let w = dir.join(WEIGHTS_FILE);
    std::fs::rename(&wtmp, &w).map_err(|e| Error::io(&w, e))?;
    let c = dir.join(CONFIG_FILE);
    std::fs::rename(&ctmp, &c).map_err(|e| Error::io(&c, e))?;
    Ok(())
}

/// Reads `config.json` of a checkpoint directory.
pub fn read_meta(dir: &Path) -> Result<CheckpointMeta> {
    let p = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let meta: CheckpointMeta = serde_json::from_str(&text)?;
    if meta.format != FORMAT {
        return Err(Error::msg(format!(
            "{}: format {:?}, expected {FORMAT:?}",
            p.display(),
            meta.format
        )));
    }
    if !meta.subword
        && (meta.model.vocab != meta.alphabet().len() || !meta.alphabet().contains(FALLBACK))
    {
        return Err(Error::msg(format!(
            "{}: alphabet of {} characters does not match vocab {}",
            p.display(),
            meta.alphabet().len(),
            meta.model.vocab
        )));
    }
    Ok(meta)
}

/// The codec of a checkpoint: its alphabet, or the subword vocabulary saved beside it.
pub fn read_codec(dir: &Path, meta: &CheckpointMeta) -> Result<Codec> {
    if !meta.subword {
        return Ok(Codec::Chars(meta.alphabet()));
    }
    let p = dir.join(TOKENIZER_FILE);
    let json = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let v =
        SubwordVocab::from_json(&json).map_err(|e| Error::msg(format!("{}: {e}", p.display())))?;
    if v.len() != meta.model.vocab {
        return Err(Error::msg(format!(
            "{}: {} pieces, but the model has {} outputs",
            p.display(),
            v.len(),
            meta.model.vocab
        )));
    }
    Ok(Codec::Subword(Box::new(v)))
}

/// Loads a checkpoint for inference (weights as f32 on `device`); also returns a short hash of
/// the weights file.
pub fn load(dir: &Path, device: &Device) -> Result<(CharLm, CheckpointMeta, String)> {
    let meta = read_meta(dir)?;
    let w = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&w).map_err(|e| Error::io(&w, e))?;
    let hash = crate::hash::digest(&bytes, crate::hash::DigestWidth::High32);
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    let lm = CharLm::new(&meta.model, vb)?;
    Ok((lm, meta, hash))
}

/// Loads a checkpoint's weights into an existing `varmap`, to continue training or fine-tune.
/// Every variable must be in the checkpoint except those `may_lack` accepts (parts the
/// checkpoint's model did not have), which keep their values.
pub fn load_into(
    dir: &Path,
    varmap: &VarMap,
    may_lack: impl Fn(&str) -> bool,
) -> Result<CheckpointMeta> {
    let meta = read_meta(dir)?;
    let w = dir.join(WEIGHTS_FILE);
    let tensors = candle_core::safetensors::load(&w, &Device::Cpu)?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::msg("varmap lock poisoned"))?;
    for (name, var) in data.iter() {
        match tensors.get(name) {
            Some(t) => var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?,
            None if may_lack(name) => {}
            None => return Err(Error::msg(format!("{}: no tensor {name}", w.display()))),
        }
    }
    Ok(meta)
}
