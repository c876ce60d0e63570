//! Story training tests: overfitting a tiny text, hashtag
//! conditioning end to end, corpus reading. No shared data needed.
use std::path::Path;

use candle_core::Device;

use hashtale_models::story::checkpoint;
use hashtale_models::story::codec::Alphabet;
use hashtale_models::story::{keywords, Conditioning, GenerateOptions, StoryModel};
use hashtale_train::story::corpus::{parse_stories, read_stories, CorpusSpec};
use hashtale_train::story::train::{train, TrainConfig};

#[test]
fn corpus_reader_handles_crlf_empty_stories_and_non_ascii() {
    let text = "\u{feff}First story,\r\nsecond line.\r\n\r\n\r\n  \r\nZoë's café — naïve.\r\n\n\n\t\nLast one\rwith CR.";
    let stories = parse_stories(text);
    assert_eq!(
        stories,
        vec![
            "First story, second line.".to_string(),
            "Zoë's café — naïve.".to_string(),
            "Last one with CR.".to_string(),
        ]
    );
    assert!(parse_stories("\n\n \r\n\t\n").is_empty());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.txt");
    std::fs::write(&p, text).unwrap();
    assert_eq!(read_stories(&p).unwrap(), stories);
    assert!(read_stories(&dir.path().join("missing.txt")).is_err());
    // Non-ASCII characters enter the alphabet and round-trip.
    let a = Alphabet::from_texts(stories.iter().map(|s| s.as_str()), 1);
    assert!(a.contains('ë') && a.contains('—'));
    assert_eq!(a.decode(&a.encode(&stories[1])), stories[1]);
}

/// Three short stories a small model memorises within a few hundred steps.
const TINY_STORIES: [&str; 3] = [
    "the cat sat on the mat and looked at the hat.",
    "a dog ran to the park and then ran home again.",
    "we ate cake at noon, then we slept in the sun.",
];

/// A small, fast training setting on [`TINY_STORIES`] (8 copies, written into `dir`), no dev
/// split, no pseudo-tags; callers set the step count.
fn tiny_config(dir: &Path) -> TrainConfig {
    let corpus = dir.join("tiny.txt");
    let text: String = (0..8).map(|_| TINY_STORIES.join("\n\n") + "\n\n").collect();
    std::fs::write(&corpus, text).unwrap();
    let mut cfg = TrainConfig::default_story();
    cfg.corpora = vec![CorpusSpec {
        path: corpus,
        weight: 1.0,
    }];
    cfg.emb = 16;
    cfg.hidden = 64;
    cfg.dropout = 0.0;
    cfg.batch = 4;
    cfg.bptt = 32;
    cfg.optim.lr = 0.01;
    cfg.warmup_steps = 5;
    cfg.epochs = 1000.0;
    cfg.tag_prob = 0.0;
    cfg.dev_frac = 0.0;
    cfg.min_char_count = 1;
    cfg.eval_every = 1000;
    cfg
}

#[test]
fn lm_overfits_a_tiny_text() {
    let dir = tempfile::tempdir().unwrap();
    let stories = TINY_STORIES;
    let mut cfg = tiny_config(dir.path());
    cfg.max_steps = Some(250);
    let out = dir.path().join("model");
    let report = train(&cfg, &out, None).unwrap();
    assert_eq!(report.steps, 250);
    // Uniform over ~25 characters is 3.2 nats/char; the memorised text is far below.
    assert!(
        report.final_train_loss < 0.5,
        "final loss {}",
        report.final_train_loss
    );
    // The saved model scores the training stories well too, and greedy decoding recites one.
    let m = StoryModel::load(&out, &Device::Cpu).unwrap();
    let r = m
        .evaluate(&stories.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .unwrap();
    assert!(r.bits_per_char < 1.0, "bits/char {}", r.bits_per_char);
    assert_eq!(r.chars, stories.iter().map(|s| s.len() + 2).sum::<usize>());
    let greedy = GenerateOptions {
        temperature: 0.0,
        max_chars: 30,
        ..Default::default()
    };
    let s = m.generate_batch(&["".to_string()], &greedy).unwrap();
    assert!(
        stories.iter().any(|t| t.starts_with(&s[0][..20])),
        "greedy output {:?}",
        s[0]
    );
}

/// The conditioned model end to end on a tiny corpus, reading the hashtags as the prefix line
/// only, and also as keyword vectors at every step.
#[test]
fn conditioned_model_trains_on_keyword_prefixes() {
    conditioned_model_end_to_end(0);
}

#[test]
fn conditioned_model_with_keyword_vectors_trains() {
    conditioned_model_end_to_end(8);
}

/// Keywords become the prefix, the keyword file is saved with the checkpoint, the prefix lowers
/// bits/char of the story it names, and generation is batched like sequential, with and without
/// hashtags.
fn conditioned_model_end_to_end(keyword_dim: usize) {
    let dir = tempfile::tempdir().unwrap();
    let stories = TINY_STORIES;
    let vocab = dir.path().join("vocab.txt");
    std::fs::write(&vocab, "cat\ndog\npark\ncake\nsun\nthe\n").unwrap();
    let mut cfg = tiny_config(dir.path());
    cfg.conditioning = Conditioning::Keywords;
    cfg.keyword_vocab = vec![vocab.clone()];
    cfg.prefix_drop = 0.3;
    cfg.keyword_dim = keyword_dim;
    cfg.max_steps = Some(300);
    let out = dir.path().join("model");
    train(&cfg, &out, None).unwrap();
    assert!(out.join(keywords::KEYWORDS_FILE).exists());
    let m = StoryModel::load(&out, &Device::Cpu).unwrap();
    assert!(m.is_conditioned());
    assert_eq!(m.lm().has_keywords(), keyword_dim > 0);
    let kw = m.keywords().unwrap();
    assert_eq!(kw.extract(stories[0]), ["cat"]);
    assert_eq!(kw.extract(stories[1]), ["dog", "park"]);
    // The prefix is context: the same characters are scored with and without it, and knowing the
    // story's keywords makes its first words predictable.
    let docs: Vec<(Vec<String>, String)> = stories
        .iter()
        .map(|s| (kw.extract(s), s.to_string()))
        .collect();
    let blind: Vec<(Vec<String>, String)> =
        stories.iter().map(|s| (vec![], s.to_string())).collect();
    let with = m.evaluate_with_tags(&docs).unwrap();
    let without = m.evaluate_with_tags(&blind).unwrap();
    assert_eq!(with.chars, without.chars);
    assert_eq!(without, m.evaluate(&stories.map(String::from)).unwrap());
    assert!(
        with.bits_per_char < without.bits_per_char,
        "{with:?} vs {without:?}"
    );
    // Greedy generation from a prefix writes that story; an empty list still writes one.
    let greedy = GenerateOptions {
        temperature: 0.0,
        max_chars: 30,
        ..Default::default()
    };
    let lists = vec![
        vec!["dog".to_string()],
        vec![],
        vec!["#Sun".to_string(), "cake".to_string()],
    ];
    let out_b = m.generate_for_tags(&lists, &[0, 1, 2], &greedy).unwrap();
    assert!(out_b[0].starts_with("a dog ran"), "{:?}", out_b[0]);
    assert!(!out_b[1].is_empty());
    for (i, l) in lists.iter().enumerate() {
        let one = m
            .generate_for_tags(std::slice::from_ref(l), &[i as u64], &greedy)
            .unwrap();
        assert_eq!(one[0], out_b[i]);
    }
    let sampled = GenerateOptions::default();
    let b = m.generate_for_tags(&lists, &[5, 6, 7], &sampled).unwrap();
    for (i, l) in lists.iter().enumerate() {
        let one = m
            .generate_for_tags(std::slice::from_ref(l), &[5 + i as u64], &sampled)
            .unwrap();
        assert_eq!(one[0], b[i]);
    }
    let tensor = m.clone().with_tensor_engine();
    assert_eq!(
        tensor
            .generate_for_tags(&lists, &[5, 6, 7], &sampled)
            .unwrap(),
        b
    );
    assert_eq!(m.story_tags(&["#Dog", "park", "dog"]), ["dog", "park"]);
    assert_eq!(m.prompt_for(&["dog"]), "\n\n#dog\n");
    if keyword_dim > 0 {
        // Ids are ranks in keywords.tsv: a file that does not fit the table is refused at load.
        let p = out.join(keywords::KEYWORDS_FILE);
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("zebra\t3.0\n");
        std::fs::write(&p, text).unwrap();
        let e = StoryModel::load(&out, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("keyword table"), "{e}");
    }
}

/// The subword model: a BPE vocabulary learnt from the training stories, saved beside the
/// weights; bits/char counts the story's characters; a hashtag in the prefix makes the model
/// write about it more often than no hashtag does.
#[test]
fn conditioned_subword_model_mentions_its_hashtag() {
    subword_end_to_end(false);
}

/// The same with keyword copy: the gate is saved and loaded, its pieces come back from the
/// keyword table and vocabulary, and the host engine writes what the tensor path writes.
#[test]
fn keyword_copy_model_mentions_its_hashtag() {
    subword_end_to_end(true);
}

fn subword_end_to_end(copy: bool) {
    let dir = tempfile::tempdir().unwrap();
    let vocab = dir.path().join("vocab.txt");
    std::fs::write(&vocab, "cat\ndog\npark\ncake\nsun\n").unwrap();
    let mut cfg = tiny_config(dir.path());
    cfg.subword_vocab = 300;
    cfg.conditioning = Conditioning::Keywords;
    cfg.keyword_vocab = vec![vocab];
    cfg.prefix_drop = 0.3;
    cfg.keyword_dim = 8;
    cfg.keyword_copy = copy;
    cfg.bptt = 16;
    cfg.max_steps = Some(250);
    let out = dir.path().join("model");
    train(&cfg, &out, None).unwrap();
    assert!(out.join(checkpoint::TOKENIZER_FILE).exists());
    let m = StoryModel::load(&out, &Device::Cpu).unwrap();
    assert_eq!(m.codec().kind(), "subword");
    assert_eq!(m.lm().has_copy(), copy);
    let stories: Vec<String> = TINY_STORIES.iter().map(|s| s.to_string()).collect();
    let r = m.evaluate(&stories).unwrap();
    assert_eq!(r.chars, stories.iter().map(|s| s.len() + 2).sum::<usize>());
    assert!(r.bits_per_char < 1.5, "bits/char {}", r.bits_per_char);
    let opts = GenerateOptions {
        max_chars: 40,
        temperature: 1.0,
        ..Default::default()
    };
    let n = 24;
    let streams: Vec<u64> = (0..n as u64).collect();
    let with = m
        .generate_for_tags(&vec![vec!["dog".to_string()]; n], &streams, &opts)
        .unwrap();
    let without = m
        .generate_for_tags(&vec![vec![]; n], &streams, &opts)
        .unwrap();
    let count = |v: &[String]| v.iter().filter(|t| keywords::mentions(t, "dog")).count();
    assert!(
        count(&with) > count(&without) + n / 4,
        "with #dog: {} of {n}, without: {}",
        count(&with),
        count(&without)
    );
    let tensor = m.clone().with_tensor_engine();
    let lists: Vec<Vec<String>> = (0..n)
        .map(|i| match i % 3 {
            0 => vec!["dog".to_string()],
            1 => vec!["cake".to_string(), "sun".to_string()],
            _ => vec![],
        })
        .collect();
    assert_eq!(
        tensor.generate_for_tags(&lists, &streams, &opts).unwrap(),
        m.generate_for_tags(&lists, &streams, &opts).unwrap()
    );
    if copy {
        // Copy forms that do not fit the keyword table are refused.
        let mut lm = m.lm().clone();
        let wrong = hashtale_models::story::copy::CopyTable::new(vec![vec![vec![0]]]);
        assert!(lm.set_copy_table(wrong).is_err());
    }
}
