//! The binary on its own: `hashtale eval tags` and `tune fusion` on a labelled folder with no
//! `splits.tsv` (the whole folder is `all`), `hashtale run` on a taken port, models found through
//! `HASHTALE_ASSETS` alone, and `tag` using the pipeline's decode limits.
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

    // `tune fusion` fits there too, and writes one line per image for offline study.
    let lines = dir.path().join("per-image.jsonl");
    let weights = dir.path().join("fusion.json");
    let out = hashtale(&[
        "tune",
        "fusion",
        "--data",
        data,
        "--cache",
        cache,
        "--out",
        weights.to_str().unwrap(),
        "--per-image",
        lines.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&lines)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert_eq!(line["set"], data);
        assert!(!line["truth"].as_array().unwrap().is_empty(), "{line}");
        for source in ["decoder", "concepts", "probe"] {
            assert!(
                !line[source].as_array().unwrap().is_empty(),
                "{source}: {line}"
            );
        }
    }
    assert_eq!(lines[0]["concepts"][0][0], "cat", "{}", lines[0]);
    assert!(weights.exists());

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

/// The binary run from another folder, with nothing but `HASHTALE_ASSETS` in its environment
/// (as in the Docker image): every model comes from there. The story model and the hashtag
/// statistics used to ignore it and load from the build checkout instead.
#[test]
fn loads_every_model_from_hashtale_assets_alone() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    // An assets folder of links into the repo's; the default story model's folder
    // (`story-subword`) links to the story model the caller chooses.
    let assets = |name: &str, story: Option<&str>, skip: &str| {
        let root = tmp.path().join(name);
        std::fs::create_dir(&root).unwrap();
        for part in ["encoder", "tags", "concepts", "hashtags"] {
            if part != skip {
                std::os::unix::fs::symlink(repo.join(part), root.join(part)).unwrap();
            }
        }
        if let Some(story) = story {
            std::os::unix::fs::symlink(repo.join(story), root.join("story-subword")).unwrap();
        }
        root
    };
    let photo = repo.join("samples/chelsea.png");
    let tag = |assets: &Path| {
        Command::new(env!("CARGO_BIN_EXE_hashtale"))
            .env_clear()
            .env("HASHTALE_ASSETS", assets)
            .current_dir(&elsewhere)
            .args(["tag", "--story", "--json"])
            .arg(&photo)
            .output()
            .expect("run hashtale")
    };
    let version = |out: &std::process::Output| -> String {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(line["hashtags"].as_array().is_some_and(|t| !t.is_empty()));
        line["model_version"].as_str().unwrap().to_string()
    };
    let story_part = |v: &str| {
        v.split('+')
            .find(|p| p.starts_with("story:"))
            .map(str::to_string)
    };

    let shipped = version(&tag(&assets("shipped", Some("story-subword"), "")));
    let plain = version(&tag(&assets("plain", Some("story-plain"), "")));
    assert!(story_part(&shipped).is_some(), "{shipped}");
    assert_ne!(
        story_part(&shipped),
        story_part(&plain),
        "the story model must come from HASHTALE_ASSETS"
    );

    // A folder without hashtag statistics fails, naming where it looked.
    let bare = assets("bare", Some("story-subword"), "hashtags");
    let out = tag(&bare);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&bare.join("hashtags").display().to_string()),
        "{err}"
    );
}

/// `hashtale tag` decodes with the pipeline's limits: an 8000×8000 photo (64 MP, over the 40 MP
/// default) is refused from its header, as the worker refuses it, instead of being decoded.
#[test]
fn tag_refuses_what_the_pipeline_refuses() {
    // A PNG declaring 8000×8000 RGB: signature, IHDR, empty IDAT and IEND, CRCs included.
    const HEADER_8000: [u8; 57] = [
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x1f, 0x40, 0x00, 0x00, 0x1f, 0x40, 0x08, 0x02, 0x00, 0x00, 0x00, 0x89,
        0x93, 0x3a, 0xa3, 0x00, 0x00, 0x00, 0x00, 0x49, 0x44, 0x41, 0x54, 0x35, 0xaf, 0x06, 0x1e,
        0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.png");
    std::fs::write(&big, HEADER_8000).unwrap();
    let out = hashtale(&["tag", "--source", "concepts", big.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("8000×8000 pixels exceeds the limit of 40000000 pixels"),
        "{err}"
    );
    // Named once, not "image: …: image: …".
    assert_eq!(err.matches("big.png").count(), 1, "{err}");
    assert!(!out.status.success(), "a refused image is a failure");
}

/// `eval story --compare` puts story models side by side on the same characters: a
/// conditioned model is also scored without its hashtags, every model writes the asked number
/// of stories, and the measures are those of docs/story.md (the word list is the test's own).
#[test]
fn eval_story_compares_models_on_the_same_characters() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("stories.txt");
    std::fs::write(
        &text,
        "My dog ran along the beach. He chased the waves and barked at a bird.\n\n\
         We drank coffee with a friend in the city. The car outside was loud.\n\n\
         The cat slept on the warm chair all day.\n",
    )
    .unwrap();
    let words = dir.path().join("words.txt");
    std::fs::write(&words, "the\na\nand\ndog\nbeach\ncat\n").unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let subword = repo.join("assets/story-subword");
    let plain = repo.join("assets/story-plain");
    let out = hashtale(&[
        "eval",
        "story",
        "--text",
        text.to_str().unwrap(),
        "--compare",
        subword.to_str().unwrap(),
        "--compare",
        plain.to_str().unwrap(),
        "--generate",
        "4",
        "--top-p",
        "0.9",
        "--words",
        words.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let models = m["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "{m}");
    let (conditioned, plain) = (&models[0], &models[1]);
    assert_eq!(conditioned["chars"], plain["chars"], "the same characters");
    for r in models {
        let bpc = r["bits_per_char"].as_f64().unwrap();
        assert!(bpc > 0.5 && bpc < 8.0, "{r}");
        let g = &r["generation"];
        assert_eq!(g["stories"], 4, "{r}");
        let non_words = g["non_word_rate"].as_f64().unwrap();
        // Six known words: most of what a model writes is outside them.
        assert!(non_words > 0.2 && non_words <= 1.0, "{r}");
    }
    let without = conditioned["bits_per_char_without_hashtags"]
        .as_f64()
        .unwrap();
    assert!(without > 0.5 && without < 8.0, "{conditioned}");
    assert!(plain["bits_per_char_without_hashtags"].is_null(), "{plain}");
}
