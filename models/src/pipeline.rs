//! The whole model step for a batch of images: encoder → batched beam search (content
//! hashtags) → Instagram hashtag suggestions → batched stories seeded with the top hashtag.
//!
//! This is the one entry point the worker and the CLI use.
use std::path::Path;

use candle_core::Device;
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use crate::encoder::{default_encoder_path, EfficientNetLite0, ImageEncoder};
use crate::expand::{default_stats_path, Expander, SuggestOptions, Suggestion};
use crate::story::{GenerateOptions, StoryModel};
use crate::tags::{default_model_dir, short_digest, BeamOptions, TagModel};
use crate::Result;

/// One hashtag with its probability and the 7×7 attention map (49 weights, row-major) that
/// produced it (empty for models without attention).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoredTag {
    pub tag: String,
    pub score: f32,
    pub attention: Vec<f32>,
}

/// What the models say about one image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageResult {
    /// Content hashtags from the image, ranked, with attention maps.
    pub hashtags: Vec<ScoredTag>,
    /// Instagram hashtags suggested from the content hashtags, with the tags that brought them.
    #[serde(default)]
    pub instagram: Vec<Suggestion>,
    /// The story, when a story model is loaded.
    pub story: Option<String>,
    /// The text that seeded the story: the prompt line of its hashtags.
    #[serde(default)]
    pub story_seed: Option<String>,
    /// The hashtags that conditioned the story (a conditioned model takes up to 5: content
    /// hashtags first, then Instagram suggestions it knows; the plain model the top hashtag).
    #[serde(default)]
    pub story_tags: Vec<String>,
}

/// Knobs of one run.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    pub beam: BeamOptions,
    /// Write stories (needs a story model).
    pub story: Option<GenerateOptions>,
    /// Suggest Instagram hashtags (needs the statistics file).
    pub expand: Option<SuggestOptions>,
}

/// Loaded models, ready to run batches.
pub struct Hashtale {
    encoder: EfficientNetLite0,
    tags: TagModel,
    story: Option<StoryModel>,
    expander: Option<(Expander, String)>,
    pub options: PipelineOptions,
}

impl Hashtale {
    /// Loads the shipped encoder, hashtag model, story model and hashtag statistics, with
    /// stories and suggestions switched on.
    pub fn load_default() -> Result<Self> {
        let device = crate::device::best_device();
        let mut h = Self::load(&device, None, true, true)?;
        h.options.story = Some(GenerateOptions {
            stop_at_sentence_end: true,
            ..GenerateOptions::default()
        });
        h.options.expand = Some(SuggestOptions::default());
        Ok(h)
    }

    /// Loads the encoder and a hashtag model (default: the shipped one), plus the story model
    /// and statistics when asked. Options start empty: set `options` to switch stories and
    /// suggestions on.
    pub fn load(
        device: &Device,
        tag_model: Option<&Path>,
        with_story: bool,
        with_expand: bool,
    ) -> Result<Self> {
        let encoder = EfficientNetLite0::load(&default_encoder_path(), device)?;
        let tags = TagModel::load(tag_model.unwrap_or(&default_model_dir()), device)?;
        let story = if with_story {
            Some(StoryModel::load_default(device)?)
        } else {
            None
        };
        let expander = if with_expand {
            let path = default_stats_path();
            let bytes = std::fs::read(&path).map_err(|e| crate::Error::io(&path, e))?;
            Some((Expander::load_default()?, short_digest(&bytes)))
        } else {
            None
        };
        Ok(Self {
            encoder,
            tags,
            story,
            expander,
            options: PipelineOptions::default(),
        })
    }

    /// Replaces the story model (e.g. the plain one, `assets/story-plain`, to compare it with the
    /// default hashtag-conditioned model). The model version changes with it.
    pub fn set_story_model(&mut self, model: StoryModel) {
        self.story = Some(model);
    }

    /// A string naming the exact weights in use, stored with every result.
    pub fn model_version(&self) -> String {
        let mut v = format!("tags:{}", self.tags.version());
        if let Some(s) = &self.story {
            v.push_str(&format!("+story:{}", s.version()));
        }
        if let Some((_, digest)) = &self.expander {
            v.push_str(&format!("+expand:{digest}"));
        }
        v
    }

    /// Runs every model on a batch of decoded images; one result per image, in order.
    pub fn run_batch(&self, images: &[DynamicImage]) -> Result<Vec<ImageResult>> {
        if images.is_empty() {
            return Ok(vec![]);
        }
        let enc = self.encoder.encode_images(images)?;
        let predictions = self.tags.predict(&enc, self.options.beam)?;
        let mut results: Vec<ImageResult> = predictions
            .into_iter()
            .map(|p| {
                let mut hashtags = p.tags;
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
            // One RNG stream per image, named by its pixels: the same photo always gets the same
            // story, and images in the same batch slot of different batches do not share a stream.
            let streams: Vec<u64> = images
                .iter()
                .map(|img| crate::hash::fnv1a(img.as_bytes()))
                .collect();
            let stories = story.generate_for_tags(&tag_lists, &streams, opts)?;
            for ((r, tags), text) in results.iter_mut().zip(tag_lists).zip(stories) {
                r.story = Some(text);
                r.story_seed = Some(story.prompt_for(&tags).trim().to_string());
                r.story_tags = tags;
            }
        }
        Ok(results)
    }
}
