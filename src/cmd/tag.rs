//! `hashtale tag`: hashtags (content + Instagram suggestions) and optionally a story per image.
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use hashtale_models::expand::{read_tag_set, SuggestOptions};
use hashtale_models::pipeline::{Hashtale, LoadOptions, PipelineOptions, TagSource};
use hashtale_models::story::GenerateOptions;
use hashtale_models::tags::BeamOptions;
use serde::Serialize;

#[derive(Args)]
pub struct TagArgs {
    /// Image files, or directories whose images are tagged.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Print JSON (one object per image per line), attention maps included.
    #[arg(long)]
    pub json: bool,
    /// Hashtag model directory (default: models.tag_model, else the shipped model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Which taggers rank the content hashtags: fused (the attention decoder, the encoder's
    /// ImageNet concepts and the model's linear probe), decoder, concepts or probe.
    #[arg(long, value_parser = ["fused", "decoder", "concepts", "probe"], default_value = "fused")]
    pub source: String,
    /// At most this many content hashtags per image.
    #[arg(long, default_value_t = 10)]
    pub max_tags: usize,
    #[arg(long, default_value_t = 3)]
    pub beam: usize,
    /// At least this many content hashtags per image.
    #[arg(long, default_value_t = 3)]
    pub min_tags: usize,
    /// Also write a story about the hashtags (the conditioned model reads up to 5 of them).
    #[arg(long)]
    pub story: bool,
    /// Story model: a checkpoint directory or a llama2.c `.bin` (default: models.story_model,
    /// else the shipped hashtag-conditioned assets/story; assets/story-plain is the plain
    /// model, seeded the seed's way).
    #[arg(long)]
    pub story_model: Option<std::path::PathBuf>,
    /// Tokenizer of a llama2.c `--story-model` (default: the tokenizer.bin or tok*.bin beside it).
    #[arg(long)]
    pub story_tokenizer: Option<std::path::PathBuf>,
    /// Story sampling temperature.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Story nucleus sampling (default: the story model's own setting; 1: off).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Skip the Instagram hashtag suggestions.
    #[arg(long)]
    pub no_instagram: bool,
    /// Cap on all hashtags of a post (content + suggested); Instagram allows 30.
    #[arg(long, default_value_t = 15)]
    pub max_total: usize,
    /// File of hashtags never to output (one per line or space-separated, `#` optional).
    #[arg(long)]
    pub blocklist: Option<PathBuf>,
    /// File of the only hashtags that may be suggested (a brand's own set).
    #[arg(long)]
    pub allowlist: Option<PathBuf>,
    /// Images per model batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
}

fn is_image_file(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("jpg" | "jpeg" | "png" | "webp" | "gif" | "bmp")
    )
}

/// Files as given, directories expanded to their image files (sorted).
pub fn expand_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && is_image_file(f))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct JsonLine<'a> {
    image: String,
    #[serde(flatten)]
    result: &'a hashtale_models::pipeline::ImageResult,
    model_version: &'a str,
}

pub fn run(a: TagArgs) -> anyhow::Result<()> {
    let device = hashtale_models::device::best_device();
    let source = TagSource::parse(&a.source).context("--source")?;
    let cfg = super::models::offline_config()?;
    let mut paths = super::models::resolve(&cfg.models);
    if let Some(dir) = &a.model {
        paths.tag_model = dir.clone();
    }
    if let Some(story) = &a.story_model {
        paths.story_model = story.clone();
        paths.story_tokenizer = a.story_tokenizer.clone();
    }
    let limits = cfg.fetch.decode_limits();
    let mut model = Hashtale::load(
        &device,
        &LoadOptions {
            paths,
            story: a.story,
            expand: !a.no_instagram,
            concepts: source != TagSource::Decoder,
        },
    )
    .context("loading models")?;
    let mut expand = SuggestOptions {
        max_total: a.max_total,
        ..SuggestOptions::default()
    };
    if let Some(p) = &a.blocklist {
        expand.blocklist = read_tag_set(p)?;
    }
    if let Some(p) = &a.allowlist {
        expand.allowlist = Some(read_tag_set(p)?);
    }
    model.options = PipelineOptions {
        beam: BeamOptions {
            beam_size: a.beam,
            max_tags: a.max_tags,
            min_tags: a.min_tags,
        },
        source,
        concepts: Default::default(),
        story: a.story.then(|| GenerateOptions {
            temperature: a.temperature,
            top_p: a.top_p,
            stop_at_sentence_end: true,
            ..GenerateOptions::default()
        }),
        // The blocklist also filters content hashtags, so keep the options even without suggestions.
        expand: Some(expand),
    };
    let version = model.model_version();
    let files = expand_inputs(&a.images)?;
    let mut failures = 0;
    for chunk in files.chunks(a.batch_size.max(1)) {
        let mut images = Vec::new();
        let mut names = Vec::new();
        for f in chunk {
            match load_input(&model, f, &limits) {
                Ok(input) => {
                    images.push(input);
                    names.push(f);
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("error: {e}");
                }
            }
        }
        for (name, r) in names.iter().zip(model.run_batch(&images)?) {
            if a.json {
                let line = JsonLine {
                    image: name.display().to_string(),
                    result: &r,
                    model_version: &version,
                };
                println!("{}", serde_json::to_string(&line)?);
                continue;
            }
            println!("{}", name.display());
            let tags: Vec<String> = r
                .hashtags
                .iter()
                .map(|t| format!("#{} {:.2}", t.tag, t.score))
                .collect();
            println!("  hashtags:  {}", tags.join("  "));
            if !r.instagram.is_empty() {
                let ig: Vec<String> = r.instagram.iter().map(|s| format!("#{}", s.tag)).collect();
                println!("  instagram: {}", ig.join(" "));
            }
            if let (Some(story), Some(seed)) = (&r.story, &r.story_seed) {
                println!("  story ({seed}): {story}");
            }
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} image(s) could not be read");
    }
    Ok(())
}

/// Reads, decodes and prepares one image file the way the worker does: the story stream comes
/// from the file's bytes, so `tag --story` writes what the pipeline writes for the same file.
fn load_input(
    model: &Hashtale,
    path: &Path,
    limits: &hashtale_fetch::DecodeLimits,
) -> Result<hashtale_models::pipeline::ModelInput, hashtale_fetch::DecodeError> {
    let (bytes, img) = hashtale_fetch::load_image_file(path, limits)?;
    Ok(hashtale_models::pipeline::ModelInput::new(
        model.prepare(img),
        &bytes,
    ))
}
