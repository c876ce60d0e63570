//! What the models say about one image.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One hashtag with its probability and the 7×7 map (49 weights, row-major, summing to 1) of
/// where it is: the decoder's attention, or a concept's class activation map (empty only for the
/// baselines without attention, before fusion).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ScoredTag {
    pub tag: String,
    pub score: f32,
    pub attention: Vec<f32>,
}

/// One suggested Instagram hashtag: its association score and the content tags that brought
/// it, strongest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Suggestion {
    pub tag: String,
    pub score: f32,
    pub because: Vec<String>,
}

/// What the models say about one image: made by the worker's model step (and `hashtale tag`),
/// stored as a result's `output`, served by the API, shown on the ratings page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
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

impl ImageResult {
    /// The content hashtags' names, best first.
    pub fn tag_names(&self) -> impl Iterator<Item = &str> {
        self.hashtags.iter().map(|t| t.tag.as_str())
    }
}
