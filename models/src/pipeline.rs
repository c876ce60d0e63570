//! The whole model step for a batch of images: encoder → batched beam search (content
//! hashtags) fused with the encoder's concept hashtags → Instagram hashtag suggestions →
//! batched stories seeded with the top hashtags.
//!
//! This is the one entry point the worker and the CLI use.

use candle_core::Device;
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use crate::encoder::{load_encoder, EfficientNetLite, ImageEncoder, LiteVariant};
use crate::expand::{Expander, SuggestOptions};
use crate::hash::{digest, DigestWidth};
use crate::story::{GenerateOptions, StoryWriter};
use crate::tags::concepts::{ConceptOptions, ConceptTable, ConceptTagger};
use crate::tags::fuse::{fuse_with_probe, FusionWeights};
use crate::tags::probe::LinearProbe;
use crate::tags::{fusion_path, BeamOptions, TagModel};
use crate::{Error, ModelPaths, Result};

pub use hashtale_types::{ImageResult, ScoredTag};

/// One image for the model step: its pixels and the RNG stream its story samples from.
#[derive(Debug, Clone)]
pub struct ModelInput {
    pub image: DynamicImage,
    pub story_stream: u64,
}

impl ModelInput {
    /// An image whose story stream is named by its file's bytes ([`story_stream`]).
    pub fn new(image: DynamicImage, file_bytes: &[u8]) -> Self {
        ModelInput {
            image,
            story_stream: story_stream(file_bytes),
        }
    }
}

/// The story stream of an image file: the first 8 bytes of its SHA-256 (the digest the store
/// keeps for uploaded images), so the same file always gets the same story, whatever batch
/// or slot it lands in, and no pixel is hashed.
pub fn story_stream(file_bytes: &[u8]) -> u64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(file_bytes);
    u64::from_be_bytes(d[..8].try_into().expect("a SHA-256 has 32 bytes"))
}

/// Which taggers make the content hashtags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TagSource {
    /// The decoder's and the concept hashtags in one calibrated list (the default).
    #[default]
    Fused,
    /// The attention decoder alone.
    Decoder,
    /// The encoder's ImageNet head alone.
    Concepts,
    /// The linear probe over the pooled features alone (where the model ships one).
    Probe,
}

impl TagSource {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fused" => Some(TagSource::Fused),
            "decoder" => Some(TagSource::Decoder),
            "concepts" => Some(TagSource::Concepts),
            "probe" => Some(TagSource::Probe),
            _ => None,
        }
    }
}

/// What [`Hashtale::load`] loads besides the encoder and the hashtag decoder.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where every file is. The hashtag model's `encoder` field picks the encoder, since a
    /// decoder only reads the features it was trained on.
    pub paths: ModelPaths,
    /// Load the story model.
    pub story: bool,
    /// Load the Instagram hashtag statistics.
    pub expand: bool,
    /// Load the concept table and fusion weights.
    pub concepts: bool,
}

/// Knobs of one run.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    pub beam: BeamOptions,
    /// Which taggers rank the content hashtags (concepts need `LoadOptions::concepts`).
    pub source: TagSource,
    pub concepts: ConceptOptions,
    /// Write stories (needs a story model).
    pub story: Option<GenerateOptions>,
    /// Suggest Instagram hashtags (needs the statistics file).
    pub expand: Option<SuggestOptions>,
}

/// The concept tagger with its fusion weights, the model's probe (if it ships one) and a digest
/// of those files.
struct Concepts {
    tagger: ConceptTagger,
    fusion: FusionWeights,
    probe: Option<LinearProbe>,
    digest: String,
}

/// Loaded models, ready to run batches.
pub struct Hashtale {
    encoder: EfficientNetLite,
    tags: TagModel,
    concepts: Option<Concepts>,
    story: Option<StoryWriter>,
    expander: Option<(Expander, String)>,
    pub options: PipelineOptions,
}

impl Hashtale {
    /// Loads every model `paths` names, with stories and suggestions switched on (the
    /// pipeline's worker and `hashtale run`).
    pub fn load_all(paths: &ModelPaths) -> Result<Self> {
        let device = crate::device::best_device();
        let mut h = Self::load(
            &device,
            &LoadOptions {
                paths: paths.clone(),
                story: true,
                expand: true,
                concepts: true,
            },
        )?;
        h.options.story = Some(GenerateOptions {
            stop_at_sentence_end: true,
            ..GenerateOptions::default()
        });
        h.options.expand = Some(SuggestOptions::default());
        Ok(h)
    }

    /// Loads the encoder and a hashtag model, plus what `what` asks for. Options start empty:
    /// set `options` to switch stories and suggestions on.
    pub fn load(device: &Device, what: &LoadOptions) -> Result<Self> {
        let paths = &what.paths;
        let tag_dir = &paths.tag_model;
        let tags = TagModel::load(tag_dir, device)?;
        let variant = LiteVariant::parse(&tags.config.encoder).ok_or_else(|| {
            Error::msg(format!(
                "the hashtag model was trained on unknown encoder `{}`",
                tags.config.encoder
            ))
        })?;
        let encoder = load_encoder(variant, paths, device)?;
        let story = if what.story {
            Some(StoryWriter::load(
                &paths.story_model,
                paths.story_tokenizer.as_deref(),
                device,
            )?)
        } else {
            None
        };
        let expander = if what.expand {
            let path = crate::expand::stats_file(&paths.hashtag_stats);
            let bytes = std::fs::read(&path).map_err(|e| crate::Error::io(&path, e))?;
            Some((Expander::load(&path)?, digest(&bytes, DigestWidth::Low48)))
        } else {
            None
        };
        let concepts = if what.concepts {
            Some(load_concepts(
                &encoder,
                &paths.concepts,
                &fusion_path(tag_dir),
                device,
            )?)
        } else {
            None
        };
        Ok(Self {
            encoder,
            tags,
            concepts,
            story,
            expander,
            options: PipelineOptions::default(),
        })
    }

    /// Replaces the story model (e.g. the plain one, `assets/story-plain`, to compare it with the
    /// default hashtag-conditioned model). The model version changes with it.
    pub fn set_story_model(&mut self, model: StoryWriter) {
        self.story = Some(model);
    }

    /// A string naming the exact weights in use, stored with every result.
    pub fn model_version(&self) -> String {
        let mut v = format!("tags:{}", self.tags.version());
        if let (Some(c), true) = (&self.concepts, self.options.source != TagSource::Decoder) {
            v.push_str(&format!("+concepts:{}", c.digest));
        }
        if let Some(s) = &self.story {
            v.push_str(&format!("+story:{}", s.version()));
        }
        if let Some((_, digest)) = &self.expander {
            v.push_str(&format!("+expand:{digest}"));
        }
        v
    }

    /// The encoder's input side in pixels.
    pub fn input_size(&self) -> u32 {
        self.encoder.input_size()
    }

    /// Squashes a decoded image to the encoder's input, as [`Hashtale::run_batch`] would: done
    /// beforehand (in the worker's decode task), a full-size photo never reaches the model
    /// thread.
    pub fn prepare(&self, image: DynamicImage) -> DynamicImage {
        crate::image_prep::to_input(image, self.input_size())
    }

    /// Runs every model on a batch of decoded images; one result per image, in order.
    pub fn run_batch(&self, inputs: &[ModelInput]) -> Result<Vec<ImageResult>> {
        if inputs.is_empty() {
            return Ok(vec![]);
        }
        let images: Vec<&DynamicImage> = inputs.iter().map(|i| &i.image).collect();
        let x = crate::image_prep::images_to_tensor(
            &images,
            self.encoder.input_size(),
            self.encoder.device(),
        )?;
        let enc = self.encoder.encode(&x)?;
        let ranked = self.content_hashtags(&enc)?;
        let mut results: Vec<ImageResult> = ranked
            .into_iter()
            .map(|mut hashtags| {
                if let Some(opts) = &self.options.expand {
                    hashtags.retain(|t| opts.allows_content(&t.tag));
                }
                ImageResult {
                    hashtags,
                    instagram: vec![],
                    story: None,
                    story_seed: None,
                    story_tags: vec![],
                }
            })
            .collect();
        if let (Some((expander, _)), Some(opts)) = (&self.expander, &self.options.expand) {
            for r in &mut results {
                let content: Vec<(String, f32)> = r
                    .hashtags
                    .iter()
                    .map(|t| (t.tag.clone(), t.score))
                    .collect();
                r.instagram = expander.suggest(&content, opts);
            }
        }
        if let (Some(story), Some(opts)) = (&self.story, &self.options.story) {
            let tag_lists: Vec<Vec<String>> = results
                .iter()
                .map(|r| {
                    let mut ranked: Vec<&str> = r.hashtags.iter().map(|t| t.tag.as_str()).collect();
                    if let Some(kw) = story.keywords() {
                        ranked.extend(
                            r.instagram
                                .iter()
                                .map(|s| s.tag.as_str())
                                .filter(|t| kw.knows(t)),
                        );
                    }
                    story.story_tags(&ranked)
                })
                .collect();
            // One RNG stream per image, named by its file: the same photo always gets the same
            // story, and images in the same batch slot of different batches do not share a stream.
            let streams: Vec<u64> = inputs.iter().map(|i| i.story_stream).collect();
            let stories = story.generate_for_tags(&tag_lists, &streams, opts)?;
            for ((r, tags), text) in results.iter_mut().zip(tag_lists).zip(stories) {
                r.story = Some(text);
                r.story_seed = Some(story.prompt_for(&tags).trim().to_string());
                r.story_tags = tags;
            }
        }
        Ok(results)
    }

    /// The content hashtags of an encoded batch, from the taggers `options.source` names.
    pub fn content_hashtags(&self, enc: &crate::encoder::Encoded) -> Result<Vec<Vec<ScoredTag>>> {
        let max_tags = self.options.beam.max_tags;
        let cells = enc.grid.dim(1)?;
        let decoder = || -> Result<Vec<Vec<ScoredTag>>> {
            Ok(self
                .tags
                .predict(enc, self.options.beam)?
                .into_iter()
                .map(|p| p.tags)
                .collect())
        };
        let Some(concepts) = &self.concepts else {
            return match self.options.source {
                TagSource::Decoder => decoder(),
                _ => Err(Error::msg("concept hashtags were not loaded")),
            };
        };
        let opts = ConceptOptions {
            max_tags,
            ..self.options.concepts
        };
        Ok(match self.options.source {
            TagSource::Decoder => decoder()?,
            TagSource::Concepts => concepts.tagger.tag(enc, opts)?,
            TagSource::Probe => match &concepts.probe {
                Some(p) => p.tag(enc, max_tags)?,
                None => return Err(Error::msg("this hashtag model ships no probe")),
            },
            TagSource::Fused => {
                let probe = match &concepts.probe {
                    Some(p) => p.tag(enc, max_tags)?,
                    None => vec![vec![]; enc.pooled.dim(0)?],
                };
                let gate = concepts.fusion.object_photo(&enc.pooled)?;
                decoder()?
                    .iter()
                    .zip(concepts.tagger.tag(enc, opts)?)
                    .zip(&probe)
                    .zip(gate)
                    .map(|(((d, c), p), g)| {
                        fuse_with_probe(d, &c, p, g, &concepts.fusion, max_tags, cells)
                    })
                    .collect()
            }
        })
    }
}

/// Loads the shipped concept table for `encoder`'s ImageNet head, the fusion weights and the
/// probe beside them (when the model directory has one).
fn load_concepts(
    encoder: &EfficientNetLite,
    table_path: &std::path::Path,
    fusion_path: &std::path::Path,
    device: &Device,
) -> Result<Concepts> {
    let table = ConceptTable::load(table_path)?;
    let (weight, bias) = encoder.classifier_parts();
    let tagger = ConceptTagger::new(table, weight, bias)?;
    let mut digest_input = std::fs::read(table_path).map_err(|e| Error::io(table_path, e))?;
    let bytes = std::fs::read(fusion_path).map_err(|e| Error::io(fusion_path, e))?;
    let fusion: FusionWeights = serde_json::from_slice(&bytes)?;
    digest_input.extend_from_slice(&bytes);
    let dir = fusion_path.parent().unwrap_or(std::path::Path::new("."));
    let probe = if LinearProbe::exists(dir) {
        let p = LinearProbe::load_for(dir, device, encoder.name())?;
        digest_input.extend_from_slice(p.digest.as_bytes());
        Some(p)
    } else {
        None
    };
    Ok(Concepts {
        tagger,
        fusion,
        probe,
        digest: digest(&digest_input, DigestWidth::Low48),
    })
}
