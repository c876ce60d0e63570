//! The taggers an evaluation or a fusion fit runs over cached encoder features: the decoder,
//! the concept tagger and the linear probe, and what each says about an image.
use std::path::Path;

use candle_core::Device;
use hashtale_models::encoder::{EfficientNetLite, ImageEncoder, LiteVariant};
use hashtale_models::tags::concepts::{ConceptOptions, ConceptTable, ConceptTagger};
use hashtale_models::tags::probe::LinearProbe;
use hashtale_models::tags::{BeamOptions, ScoredTag, TagModel, TagModelConfig};
use hashtale_models::{Error, Result};

use super::features::FeatureSet;
use crate::metrics::TOP_K;

/// The taggers of one evaluation, over cached features.
pub struct Taggers {
    pub model: Option<TagModel>,
    pub concepts: Option<ConceptTagger>,
    pub probe: Option<LinearProbe>,
    pub beam: BeamOptions,
}

/// What the taggers say about one image.
pub struct Outputs {
    pub decoder: Vec<ScoredTag>,
    /// The decoder's list filled to 5 from its next-tag distribution.
    pub fill: Vec<String>,
    pub concepts: Vec<ScoredTag>,
    pub probe: Vec<ScoredTag>,
    /// The pooled encoder vector, for the fusion's gate.
    pub pooled: Vec<f32>,
    /// The gate's score (0: no gate), set by whoever fuses.
    pub object_photo: f32,
}

impl Outputs {
    /// The image's ground truth, each tagger's scored hashtags and its gate score (`--per-image`).
    pub fn per_image_json(&self, truth: &[String]) -> serde_json::Value {
        let score = |l: &[ScoredTag]| -> Vec<(String, f32)> {
            l.iter().map(|t| (t.tag.clone(), t.score)).collect()
        };
        serde_json::json!({
            "truth": truth,
            "decoder": score(&self.decoder),
            "concepts": score(&self.concepts),
            "probe": score(&self.probe),
            "object_photo": self.object_photo,
        })
    }
}

/// Which taggers to load.
#[derive(Clone, Copy)]
pub struct Want {
    pub model: bool,
    pub concepts: bool,
    /// Load the model directory's probe: `Some(true)` requires one, `Some(false)` takes it
    /// where it exists.
    pub probe: Option<bool>,
}

impl Taggers {
    pub fn load(
        paths: &hashtale_models::ModelPaths,
        encoder: &EfficientNetLite,
        want: Want,
        beam: usize,
        min_tags: usize,
        device: &Device,
    ) -> Result<Self> {
        let dir = &paths.tag_model;
        let probe = match want.probe {
            Some(required) if required || LinearProbe::exists(dir) => {
                Some(LinearProbe::load_for(dir, device, encoder.name())?)
            }
            _ => None,
        };
        let (with_model, with_concepts) = (want.model, want.concepts);
        let model = if with_model {
            let m = TagModel::load(dir, device).map_err(|e| {
                Error::msg(format!("loading the hashtag model {}: {e}", dir.display()))
            })?;
            if m.config.encoder != encoder.name() {
                return Err(Error::msg(format!(
                    "{} was trained on {} features, not {}",
                    dir.display(),
                    m.config.encoder,
                    encoder.name()
                )));
            }
            Some(m)
        } else {
            None
        };
        let concepts = if with_concepts {
            let table = ConceptTable::load(&paths.concepts)?;
            let (w, b) = encoder.classifier_parts();
            Some(ConceptTagger::new(table, w, b)?)
        } else {
            None
        };
        let max_tags = model.as_ref().map_or(10, |m| m.config.max_tags);
        Ok(Self {
            model,
            concepts,
            probe,
            beam: BeamOptions {
                beam_size: beam,
                max_tags,
                min_tags,
            },
        })
    }

    /// Per image: the decoder's tags with its next-tag fill, the concept and the probe tags.
    pub fn run(
        &self,
        features: &FeatureSet,
        rows: &[u32],
        device: &Device,
    ) -> Result<Vec<Outputs>> {
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(64) {
            let enc = features.batch(chunk, device)?;
            let decoded = match &self.model {
                Some(m) => m
                    .predict(&enc, self.beam)?
                    .into_iter()
                    .map(|p| {
                        let fill = p.filled(TOP_K);
                        (p.tags, fill)
                    })
                    .collect(),
                None => vec![(vec![], vec![]); chunk.len()],
            };
            let concepts = match &self.concepts {
                Some(c) => c.tag(
                    &enc,
                    ConceptOptions {
                        max_tags: self.beam.max_tags,
                        ..ConceptOptions::default()
                    },
                )?,
                None => vec![vec![]; chunk.len()],
            };
            let probe = match &self.probe {
                Some(p) => p.tag(&enc, self.beam.max_tags)?,
                None => vec![vec![]; chunk.len()],
            };
            let pooled = enc
                .pooled
                .to_dtype(candle_core::DType::F32)?
                .to_vec2::<f32>()?;
            out.extend(
                decoded
                    .into_iter()
                    .zip(concepts)
                    .zip(probe)
                    .zip(pooled)
                    .map(|((((decoder, fill), concepts), probe), pooled)| Outputs {
                        decoder,
                        fill,
                        concepts,
                        probe,
                        pooled,
                        object_photo: 0.0,
                    }),
            );
        }
        Ok(out)
    }
}

pub fn names(tags: &[ScoredTag]) -> Vec<String> {
    tags.iter().map(|t| t.tag.clone()).collect()
}

/// The encoder a saved hashtag model in `dir` was trained on (its config.json's).
pub fn model_encoder(dir: &Path) -> Result<LiteVariant> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let cfg: TagModelConfig = serde_json::from_str(&text)
        .map_err(|e| Error::msg(format!("reading {}: {e}", path.display())))?;
    LiteVariant::parse(&cfg.encoder).ok_or_else(|| {
        Error::msg(format!(
            "{}: unknown encoder `{}`",
            dir.display(),
            cfg.encoder
        ))
    })
}
