//! The golden output of `hashtale tag assets/samples --json --story`: the shipped models' hashtags
//! (tags in order, scores to 1e-3, attention maps to 1e-3), Instagram suggestions and stories,
//! fixed so that refactors (the layout split of issue 16 above all) can show they change
//! nothing. After a deliberate change of models or outputs, rewrite the file with
//! `HASHTALE_BLESS=1 cargo test --test golden_tag` and say why in the commit.
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const GOLDEN: &str = "tests/golden/tag_samples.jsonl";

fn run_tag() -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_hashtale"))
        .current_dir(root)
        .args(["tag", "assets/samples", "--json", "--story"])
        .env("RUST_LOG", "warn")
        .env_remove("HASHTALE_CONFIG")
        .env("HASHTALE_ASSETS", root.join("assets"))
        .output()
        .expect("run hashtale");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

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
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Err(format!("{at}: {} items vs {}", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .try_for_each(|(i, (x, y))| same(x, y, tol, &format!("{at}[{i}]")))
        }
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
fn tag_on_the_samples_gives_the_golden_output() {
    let got = run_tag();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("HASHTALE_BLESS").is_some() {
        let text: String = got.iter().map(|v| format!("{v}\n")).collect();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), want.len(), "one line per sample");
    for (g, w) in got.iter().zip(&want) {
        if let Err(e) = same(g, w, 1e-3, w["image"].as_str().unwrap_or("?")) {
            panic!("differs from {GOLDEN}: {e}");
        }
    }
}
