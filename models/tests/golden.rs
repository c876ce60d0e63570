//! The shipped pipeline on the shipped samples against `tests/golden/tag_samples.jsonl`, as
//! `hashtale tag assets/samples --json --story` runs it (the binary's golden test checks the
//! command itself): hashtags, suggestions, stories and the model version, numbers to 1e-3.
mod support;

use candle_core::Device;
use hashtale_models::expand::SuggestOptions;
use hashtale_models::pipeline::{Hashtale, LoadOptions, ModelInput, PipelineOptions, TagSource};
use hashtale_models::story::GenerateOptions;
use hashtale_models::tags::BeamOptions;
use serde_json::Value;

/// Equal up to `tol` for numbers, exactly for everything else.
fn same(a: &Value, b: &Value, tol: f64, at: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (x - y).abs() <= tol {
                Ok(())
            } else {
                Err(format!("{at}: {x} vs {y}"))
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .try_for_each(|(i, (x, y))| same(x, y, tol, &format!("{at}[{i}]"))),
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .try_for_each(|k| match (x.get(k), y.get(k)) {
                    (Some(x), Some(y)) => same(x, y, tol, &format!("{at}.{k}")),
                    _ => Err(format!("{at}.{k}: present on one side only")),
                })
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{at}: {a} vs {b}")),
    }
}

#[test]
fn the_shipped_pipeline_gives_the_golden_output() {
    let root = support::assets().join("..");
    let mut model = Hashtale::load(
        &Device::Cpu,
        &LoadOptions {
            paths: support::shipped(),
            story: true,
            expand: true,
            concepts: true,
        },
    )
    .unwrap();
    // The defaults of `hashtale tag`.
    model.options = PipelineOptions {
        beam: BeamOptions {
            beam_size: 3,
            max_tags: 10,
            min_tags: 3,
        },
        source: TagSource::Fused,
        concepts: Default::default(),
        story: Some(GenerateOptions {
            temperature: 0.8,
            top_p: None,
            stop_at_sentence_end: true,
            ..GenerateOptions::default()
        }),
        expand: Some(SuggestOptions {
            max_total: 15,
            ..SuggestOptions::default()
        }),
    };
    let want: Vec<Value> = std::fs::read_to_string(root.join("tests/golden/tag_samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let limits = hashtale_fetch::DecodeLimits::default();
    let inputs: Vec<ModelInput> = want
        .iter()
        .map(|w| {
            let path = root.join(w["image"].as_str().unwrap());
            let (bytes, img) = hashtale_fetch::load_image_file(&path, &limits).unwrap();
            ModelInput::new(model.prepare(img), &bytes)
        })
        .collect();
    let version = model.model_version();
    for (r, w) in model.run_batch(&inputs).unwrap().iter().zip(&want) {
        let mut got = serde_json::to_value(r).unwrap();
        got["image"] = w["image"].clone();
        got["model_version"] = Value::from(version.clone());
        // The exact values, for comparing two builds bit for bit (`--nocapture`).
        println!("{got}");
        if let Err(e) = same(&got, w, 1e-3, w["image"].as_str().unwrap()) {
            panic!("differs from the golden output: {e}");
        }
    }
}
