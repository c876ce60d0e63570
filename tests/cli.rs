//! The binary on its own: `hashtale eval tags` on a labelled folder with no `splits.tsv` (the
//! whole folder is `all`), and `hashtale run` on a taken port.
use std::path::Path;
use std::process::Command;

fn hashtale(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hashtale"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run hashtale")
}

#[test]
fn evaluates_a_folder_without_splits() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples");
    for f in ["chelsea.png", "coffee.png"] {
        std::fs::copy(samples.join(f), images.join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("labels.tsv"),
        "images/chelsea.png\tcat tabby pet\nimages/coffee.png\tcoffee cup espresso\n",
    )
    .unwrap();
    let data = dir.path().to_str().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let out = hashtale(&[
        "eval", "tags", "--data", data, "--cache", cache, "--source", "concepts", "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["images"], 2);
    assert_eq!(m["p_at_1"], 1.0, "{m}");

    // The decoder and the fused list run there too (the split defaults to `all`).
    for source in ["decoder", "fused"] {
        let out = hashtale(&[
            "eval", "tags", "--data", data, "--cache", cache, "--source", source, "--json",
        ]);
        assert!(
            out.status.success(),
            "{source}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Only the prior needs a train split, and says so.
    let out = hashtale(&["eval", "tags", "--data", data, "--cache", cache, "--prior"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train split"), "{err}");
}

/// `hashtale run` on a port that is taken fails at once with the address, instead of logging
/// the failure and printing a banner for an API that is not there.
#[test]
fn run_refuses_a_taken_api_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let out = Command::new(env!("CARGO_BIN_EXE_hashtale"))
        .args(["run", "--listen", &addr, "--db", db.to_str().unwrap()])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--watch")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run hashtale");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("API"), "{err}");
    assert!(!err.contains("/v1/results"), "no banner: {err}");
    drop(taken);
}
