//! HARRISON reader on tiny fixtures, and on the real lists when `/work/shared` is present.
mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use hashtale_models::expand::{CooccurrenceStats, Expander, SuggestOptions};
use hashtale_models::Error;
use hashtale_train::data::harrison::{read_harrison, read_harrison_tags, read_harrison_vocab};
use hashtale_train::data::Sample;

fn fixture(data: &str, tags: &str, vocab: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data_list.txt"), data).unwrap();
    std::fs::write(dir.path().join("tag_list.txt"), tags).unwrap();
    if let Some(v) = vocab {
        std::fs::write(dir.path().join("vocab_index.txt"), v).unwrap();
    }
    dir
}

const VOCAB: &str = "sea     0\nbeach   1\nlove    2\ntrip     3\n";

fn touch(root: &Path, rel: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b"not really a jpeg").unwrap();
}

#[test]
fn reads_tags_like_the_real_layout() {
    let d = fixture(
        "instagram_dataset/sea/image_1.jpg\ninstagram_dataset/sea/image_2.jpg\n",
        "sea trip love \n#Beach sea beach \n",
        Some(VOCAB),
    );
    assert_eq!(
        read_harrison_vocab(d.path()).unwrap(),
        ["sea", "beach", "love", "trip"]
    );
    let tags = read_harrison_tags(d.path()).unwrap();
    assert_eq!(
        tags,
        vec![vec!["sea", "trip", "love"], vec!["beach", "sea"]]
    );
}

#[test]
fn reads_samples_and_reports_missing_images() {
    let d = fixture(
        "instagram_dataset/sea/image_1.jpg\ninstagram_dataset/sea/image_2.jpg\ninstagram_dataset/sea/image_3.jpg\n",
        "sea\nbeach love\ntrip\n",
        Some(VOCAB),
    );
    let images = tempfile::tempdir().unwrap();
    touch(images.path(), "instagram_dataset/sea/image_2.jpg");

    let err = read_harrison(d.path(), Some(images.path()), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 of 3"), "{err}");
    assert!(err.contains("--skip-missing-images"), "{err}");

    let got = read_harrison(d.path(), Some(images.path()), true).unwrap();
    assert_eq!(
        got,
        vec![Sample {
            image: images.path().join("instagram_dataset/sea/image_2.jpg"),
            tags: vec!["beach".into(), "love".into()],
        }]
    );
    // Images default to the dataset folder itself; nothing present even with skip is an error.
    touch(d.path(), "instagram_dataset/sea/image_1.jpg");
    touch(d.path(), "instagram_dataset/sea/image_2.jpg");
    touch(d.path(), "instagram_dataset/sea/image_3.jpg");
    assert_eq!(read_harrison(d.path(), None, false).unwrap().len(), 3);
    let empty = tempfile::tempdir().unwrap();
    assert!(read_harrison(d.path(), Some(empty.path()), true).is_err());
}

fn parse_error(r: Result<impl std::fmt::Debug, Error>) -> (PathBuf, usize) {
    match r {
        Err(Error::Parse { path, line, .. }) => (path, line),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn malformed_lists_name_file_and_line() {
    // More images than tag lines: the tag list ends early at line 2.
    let d = fixture("a.jpg\nb.jpg\n", "sea\n", Some(VOCAB));
    let (path, line) = parse_error(read_harrison(d.path(), None, true));
    assert_eq!(
        (path.file_name().unwrap(), line),
        (OsStr::new("tag_list.txt"), 2)
    );
    let d = fixture("a.jpg\n", "sea\nlove\n", Some(VOCAB));
    let (path, line) = parse_error(read_harrison(d.path(), None, true));
    assert_eq!(
        (path.file_name().unwrap(), line),
        (OsStr::new("data_list.txt"), 2)
    );
    // A hashtag outside the vocabulary, and an empty post.
    let d = fixture("a.jpg\nb.jpg\n", "sea\nsea sunset\n", Some(VOCAB));
    let (path, line) = parse_error(read_harrison_tags(d.path()));
    assert_eq!(
        (path.file_name().unwrap(), line),
        (OsStr::new("tag_list.txt"), 2)
    );
    let d = fixture("a.jpg\nb.jpg\n", "  \nsea\n", None);
    assert_eq!(parse_error(read_harrison_tags(d.path())).1, 1);
    // Vocabulary lines: missing index, repeated index.
    let d = fixture("", "", Some("sea 0\nbeach\n"));
    assert_eq!(parse_error(read_harrison_vocab(d.path())).1, 2);
    let d = fixture("", "", Some("sea 0\nbeach 0\n"));
    assert_eq!(parse_error(read_harrison_vocab(d.path())).1, 2);
    // Without a vocabulary file any tag is accepted.
    let d = fixture("a.jpg\n", "sunset\n", None);
    assert_eq!(read_harrison_tags(d.path()).unwrap(), vec![vec!["sunset"]]);
}

fn real_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/harrison");
    let dir = if dir.is_dir() {
        dir
    } else {
        PathBuf::from("/work/shared/data/harrison")
    };
    dir.join("tag_list.txt").is_file().then_some(dir)
}

#[test]
fn real_harrison_lists_when_present() {
    let Some(dir) = real_dir() else {
        eprintln!("HARRISON not present; skipping");
        return;
    };
    let vocab = read_harrison_vocab(&dir).unwrap();
    assert_eq!(vocab.len(), 997);
    assert_eq!(vocab[0], "love");
    let posts = read_harrison_tags(&dir).unwrap();
    assert_eq!(posts.len(), 57_383);
    assert_eq!(posts[0], ["sea", "instapic", "instagram", "trip", "travel"]);
    let mean = posts.iter().map(Vec::len).sum::<usize>() as f64 / posts.len() as f64;
    assert!((4.0..5.0).contains(&mean), "mean tags per post {mean}");
    // The images are not shipped here: the error counts them all and names the flag.
    let empty = tempfile::tempdir().unwrap();
    let err = read_harrison(&dir, Some(empty.path()), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("57383 of 57383") && err.contains("--skip-missing-images"),
        "{err}"
    );
    let stats = CooccurrenceStats::from_posts(&posts);
    assert_eq!(stats.num_tags(), 997);
    assert_eq!(stats.most_common(1)[0], ("love".to_string(), 5892));
}

#[test]
fn shipped_statistics_load_and_expand_dog() {
    let e = Expander::load(&support::shipped().hashtag_stats)
        .expect("assets/hashtags statistics are shipped");
    assert_eq!(e.stats().posts(), 57_383);
    assert_eq!(e.stats().num_tags(), 997);
    let got = e.suggest(
        &[("dog".to_string(), 0.9), ("grass".to_string(), 0.4)],
        &SuggestOptions::default(),
    );
    let tags: Vec<&str> = got.iter().map(|s| s.tag.as_str()).collect();
    assert_eq!(got.len(), 13, "15 minus the 2 content tags: {tags:?}");
    assert!(tags.contains(&"puppy"), "{tags:?}");
    assert!(got
        .iter()
        .all(|s| s.because.iter().any(|b| b == "dog" || b == "grass")));
    assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
}
