//! The `[models]` config section resolved to paths, once, for every command that loads a model.
//! The models crate never looks at the environment or the working directory: this is the one
//! place that does.
use std::path::{Path, PathBuf};

use anyhow::Result;
use hashtale_core::config::{Config, ModelsConfig};
use hashtale_models::ModelPaths;

/// The assets folder: `models.assets`, else `$HASHTALE_ASSETS`, else `./assets` when it holds
/// the encoder, else the source checkout this binary was built from.
pub fn assets_root(cfg: &ModelsConfig) -> PathBuf {
    if !cfg.assets.is_empty() {
        return PathBuf::from(&cfg.assets);
    }
    if let Some(dir) = std::env::var_os("HASHTALE_ASSETS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let here = Path::new("assets");
    if here.join("encoder").is_dir() {
        return here.to_path_buf();
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/assets"))
}

/// Every model path: the shipped layout under [`assets_root`], with each configured path in
/// its place.
pub fn resolve(cfg: &ModelsConfig) -> ModelPaths {
    let mut paths = ModelPaths::shipped(&assets_root(cfg));
    let set = |value: &str, slot: &mut PathBuf| {
        if !value.is_empty() {
            *slot = PathBuf::from(value);
        }
    };
    set(&cfg.encoder_dir, &mut paths.encoder_dir);
    set(&cfg.tag_model, &mut paths.tag_model);
    set(&cfg.concepts, &mut paths.concepts);
    set(&cfg.story_model, &mut paths.story_model);
    set(&cfg.hashtag_stats, &mut paths.hashtag_stats);
    if !cfg.story_tokenizer.is_empty() {
        paths.story_tokenizer = Some(PathBuf::from(&cfg.story_tokenizer));
    }
    paths
}

/// The configuration of a command that runs outside the pipeline (`tag`, `classify`, `eval`,
/// `train`): the file named by `$HASHTALE_CONFIG`, if any, and `HASHTALE__…` variables.
pub fn offline_config() -> Result<Config> {
    let file = std::env::var_os("HASHTALE_CONFIG")
        .filter(|f| !f.is_empty())
        .map(PathBuf::from);
    Ok(Config::load(file.as_deref())?)
}

/// The model paths of a command that runs outside the pipeline.
pub fn offline() -> Result<ModelPaths> {
    Ok(resolve(&offline_config()?.models))
}

/// The model paths of an offline command with its `--model` flag (a hashtag model directory)
/// in place of `models.tag_model`.
pub fn offline_with_tag_model(model: Option<&PathBuf>) -> Result<ModelPaths> {
    let mut paths = offline()?;
    if let Some(dir) = model {
        paths.tag_model = dir.clone();
    }
    Ok(paths)
}

/// The shipped plain story model (one hashtag in front of the story): the baseline that
/// `eval story --conditioned` and `bench` compare the configured model with.
pub fn plain_story_model(cfg: &ModelsConfig) -> PathBuf {
    assets_root(cfg).join("story-plain")
}

/// The shipped sample photos.
pub fn samples_dir(cfg: &ModelsConfig) -> PathBuf {
    assets_root(cfg).join("samples")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_paths_replace_the_shipped_layout() {
        let cfg = ModelsConfig {
            assets: "/opt/assets".into(),
            story_model: "/models/stories.bin".into(),
            story_tokenizer: "/models/tok512.bin".into(),
            ..ModelsConfig::default()
        };
        let p = resolve(&cfg);
        assert_eq!(p.encoder_dir, Path::new("/opt/assets/encoder"));
        assert_eq!(p.tag_model, Path::new("/opt/assets/tags"));
        assert_eq!(p.concepts, Path::new("/opt/assets/concepts/concepts.tsv"));
        assert_eq!(p.hashtag_stats, Path::new("/opt/assets/hashtags"));
        assert_eq!(p.story_model, Path::new("/models/stories.bin"));
        assert_eq!(
            p.story_tokenizer.as_deref(),
            Some(Path::new("/models/tok512.bin"))
        );
    }
}
