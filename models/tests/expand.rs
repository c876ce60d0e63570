//! Co-occurrence expansion: hand-computed scores, filters and caps, the stats file format.
use std::collections::HashSet;
use std::io::Cursor;
use std::path::Path;

use hashtale_models::expand::{
    read_tag_set, CooccurrenceStats, Expander, SuggestOptions, Suggestion,
};
use hashtale_models::Error;

/// N = 5 posts; n(a)=3 n(b)=3 n(c)=2 n(d)=1 n(e)=1; n(a,b)=2 n(a,c)=1 n(a,d)=1 n(b,c)=2.
fn tiny() -> CooccurrenceStats {
    CooccurrenceStats::from_posts([
        vec!["a", "b", "c"],
        vec!["#A", "b"],
        vec!["a", "d", "d"],
        vec!["b", "c"],
        vec!["e"],
    ])
}

fn content(tags: &[(&str, f32)]) -> Vec<(String, f32)> {
    tags.iter().map(|(t, w)| (t.to_string(), *w)).collect()
}

fn close(a: f32, b: f64) -> bool {
    (f64::from(a) - b).abs() < 1e-6
}

#[test]
fn counts_match_the_posts() {
    let s = tiny();
    assert_eq!(s.posts(), 5);
    assert_eq!(s.num_tags(), 5);
    assert_eq!(s.tag_count("a"), 3);
    assert_eq!(s.tag_count("#D"), 1, "repeats within a post count once");
    assert_eq!(s.pair_count("a", "b"), 2);
    assert_eq!(s.pair_count("c", "b"), 2);
    assert_eq!(s.pair_count("a", "e"), 0);
    assert_eq!(s.pair_count("a", "a"), 0);
    assert_eq!(s.num_pairs(), 4);
    assert_eq!(s.most_common(2), vec![("a".into(), 3), ("b".into(), 3)]);
}

#[test]
fn raw_conditional_scores_match_hand_computation() {
    let e = Expander::new(tiny()).with_alpha(0.0);
    let got = e.suggest(&content(&[("a", 0.9)]), &SuggestOptions::default());
    let tags: Vec<&str> = got.iter().map(|s| s.tag.as_str()).collect();
    // P(b|a) = 2/3; P(c|a) = P(d|a) = 1/3, tie broken by popularity (c in 2 posts, d in 1).
    assert_eq!(tags, ["b", "c", "d"]);
    assert!(close(got[0].score, 2.0 / 3.0));
    assert!(close(got[1].score, 1.0 / 3.0));
    assert!(close(got[2].score, 1.0 / 3.0));
    assert!(got.iter().all(|s| s.because == ["a"]));
}

#[test]
fn smoothed_scores_match_hand_computation() {
    // α = 5: P~(t|a) = (n(a,t) + 5·n(t)/5) / (3 + 5).
    let e = Expander::new(tiny()).with_alpha(5.0);
    let got = e.suggest(&content(&[("a", 1.0)]), &SuggestOptions::default());
    assert_eq!(got.len(), 3, "e never co-occurs with a: not a candidate");
    assert!(close(got[0].score, 5.0 / 8.0), "{got:?}");
    assert!(close(got[1].score, 3.0 / 8.0));
    assert_eq!(got[2].tag, "d");
    assert!(close(got[2].score, 2.0 / 8.0));
}

#[test]
fn several_content_tags_are_weighted_and_explained() {
    let e = Expander::new(tiny()).with_alpha(0.0);
    let got = e.suggest(
        &content(&[("a", 1.0), ("c", 0.5), ("c", 0.25), ("zebra", 1.0)]),
        &SuggestOptions::default(),
    );
    // b: (1·2/3 + 0.5·2/2) / 1.5; d: (1·1/3 + 0.5·0) / 1.5; the unknown zebra adds nothing,
    // the repeated c keeps its larger weight; content tags themselves are not suggested.
    assert_eq!(
        got,
        vec![
            Suggestion {
                tag: "b".into(),
                score: ((2.0 / 3.0 + 0.5) / 1.5) as f32,
                because: vec!["a".into(), "c".into()],
            },
            Suggestion {
                tag: "d".into(),
                score: ((1.0 / 3.0) / 1.5) as f32,
                because: vec!["a".into()],
            },
        ]
    );
}

#[test]
fn unknown_or_weightless_content_gives_nothing() {
    let e = Expander::new(tiny());
    let opts = SuggestOptions::default();
    assert!(e.suggest(&content(&[("zebra", 1.0)]), &opts).is_empty());
    assert!(e.suggest(&[], &opts).is_empty());
    assert!(e.suggest(&content(&[("a", 0.0)]), &opts).is_empty());
    assert!(e.suggest(&content(&[("a", f32::NAN)]), &opts).is_empty());
}

#[test]
fn blocklist_allowlist_and_caps_are_respected() {
    let e = Expander::new(tiny()).with_alpha(0.0);
    let c = content(&[("a", 1.0)]);
    let blocked = SuggestOptions {
        blocklist: HashSet::from(["b".to_string()]),
        ..Default::default()
    };
    let tags: Vec<String> = e.suggest(&c, &blocked).into_iter().map(|s| s.tag).collect();
    assert_eq!(tags, ["c", "d"]);

    let allowed = SuggestOptions {
        allowlist: Some(HashSet::from(["d".to_string(), "e".to_string()])),
        ..Default::default()
    };
    let tags: Vec<String> = e.suggest(&c, &allowed).into_iter().map(|s| s.tag).collect();
    assert_eq!(tags, ["d"], "allowlisted e never co-occurs with a");

    // The total counts the content tags: 2 shown (a, zebra) + 1 suggestion = 3.
    let capped = SuggestOptions {
        max_total: 3,
        ..Default::default()
    };
    let two = content(&[("a", 1.0), ("zebra", 0.5)]);
    let got = e.suggest(&two, &capped);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].tag, "b");
    // A blocked content tag is not shown, so it does not use up the cap.
    let capped_blocking = SuggestOptions {
        max_total: 3,
        blocklist: HashSet::from(["zebra".to_string()]),
        ..Default::default()
    };
    assert_eq!(e.suggest(&two, &capped_blocking).len(), 2);
    let full = SuggestOptions {
        max_total: 2,
        ..Default::default()
    };
    assert!(e.suggest(&two, &full).is_empty());
    let few = SuggestOptions {
        max_suggestions: Some(2),
        ..Default::default()
    };
    assert_eq!(e.suggest(&c, &few).len(), 2);
}

#[test]
fn suggestions_serialise_as_json() {
    let s = Suggestion {
        tag: "puppy".into(),
        score: 0.25,
        because: vec!["dog".into()],
    };
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(json, r#"{"tag":"puppy","score":0.25,"because":["dog"]}"#);
    assert_eq!(serde_json::from_str::<Suggestion>(&json).unwrap(), s);
}

#[test]
fn stats_file_round_trips() {
    let stats = tiny();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/stats.tsv");
    stats.write(&path, 1, "test table\nsecond line").unwrap();
    let back = CooccurrenceStats::read(&path).unwrap();
    assert_eq!(back, stats);
    assert_eq!(back.pair_count("b", "c"), 2);
    // The same counts score the same.
    let opts = SuggestOptions::default();
    let c = content(&[("a", 1.0), ("b", 0.3)]);
    assert_eq!(
        Expander::new(back).suggest(&c, &opts),
        Expander::new(stats.clone()).suggest(&c, &opts)
    );
    // A folder resolves to the standard file name.
    stats
        .write(&dir.path().join(hashtale_models::expand::STATS_FILE), 1, "")
        .unwrap();
    assert_eq!(Expander::load(dir.path()).unwrap().stats(), &stats);
}

#[test]
fn pruned_file_keeps_tag_counts_and_strong_pairs() {
    let stats = tiny();
    let mut buf = Vec::new();
    stats.write_to(&mut buf, 2, "").unwrap();
    let back = CooccurrenceStats::read_from(Cursor::new(buf), Path::new("mem")).unwrap();
    assert_ne!(back, stats);
    let mut pruned = stats.clone();
    pruned.prune(2);
    assert_eq!(back, pruned);
    assert_eq!(back.tag_count("d"), 1);
    assert_eq!(back.pair_count("a", "d"), 0);
    assert_eq!(back.pair_count("a", "b"), 2);
}

#[test]
fn malformed_stats_files_name_the_line() {
    let cases = [
        ("nonsense\n", 1),
        ("hashtale-cooccurrence v1\nlove\t3\n", 2),
        ("hashtale-cooccurrence v1\nposts\t4\na\t3\nb\t2\t1:1\n", 4),
        ("hashtale-cooccurrence v1\nposts\t4\na\t3\nb\t2\t0:3\n", 4),
        ("hashtale-cooccurrence v1\n# c\nposts\t4\na\t3\na\t2\n", 5),
        ("hashtale-cooccurrence v1\nposts\tfour\n", 2),
    ];
    for (text, line) in cases {
        match CooccurrenceStats::read_from(Cursor::new(text), Path::new("x.tsv")) {
            Err(Error::Parse { line: l, path, .. }) => {
                assert_eq!((l, path.as_path()), (line, Path::new("x.tsv")), "{text:?}")
            }
            other => panic!("{text:?} gave {other:?}"),
        }
    }
}

#[test]
fn tag_set_files_allow_hashes_and_comments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("block.txt");
    std::fs::write(
        &path,
        "# banned words\n#Spam\n\nfollow4follow  # too needy\n#a #b\n",
    )
    .unwrap();
    let set = read_tag_set(&path).unwrap();
    let want: HashSet<String> = ["spam", "follow4follow", "a", "b"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(set, want);
    std::fs::write(&path, "ok\nnot-a-tag\n").unwrap();
    assert!(matches!(
        read_tag_set(&path),
        Err(Error::Parse { line: 2, .. })
    ));
}
