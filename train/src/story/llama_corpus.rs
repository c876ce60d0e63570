//! A story training corpus written by a llama2.c story model prompted with hashtag words
//! (`hashtale story-corpus`).
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hashtale_models::story::keywords::{normalize_tag, read_vocab};
use hashtale_models::story::{llama2c, stream_seed, GenerateOptions, Llama2cStoryModel};
use hashtale_models::{Error, Result};
use rand::{Rng, SeedableRng};

/// Settings of [`write_corpus`].
#[derive(Debug, Clone)]
pub struct CorpusOptions {
    /// Output text file (stories separated by blank lines); an existing file is continued from
    /// the batch count in `out.batches`.
    pub out: PathBuf,
    /// Stop once the file holds this many megabytes.
    pub megabytes: f64,
    /// Stories written per batch.
    pub batch: usize,
    pub temperature: f64,
    /// Longest story in characters.
    pub max_chars: usize,
    /// Base RNG seed (of the word draws and the stories).
    pub seed: u64,
}

/// What a [`write_corpus`] run did.
#[derive(Debug, Clone)]
pub struct CorpusWritten {
    pub out: PathBuf,
    /// Size of the file at the end.
    pub bytes: u64,
    /// Stories this run added.
    pub stories: usize,
    pub seconds: f64,
}

/// The prompt words of the word lists at `paths`: the hashtags a prompt can say as a word
/// (letters only, 3+ long), each once, sorted.
pub fn prompt_words(paths: &[PathBuf]) -> Result<Vec<String>> {
    let mut words: Vec<String> = Vec::new();
    for p in paths {
        words.extend(read_vocab(p)?);
    }
    let mut seen = HashSet::new();
    words.retain(|w| {
        let w = normalize_tag(w);
        w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase()) && seen.insert(w)
    });
    words.sort();
    if words.is_empty() {
        return Err(Error::msg("the word lists hold no usable words"));
    }
    Ok(words)
}

/// The batches already written to `out` (a continued run starts at the next one).
fn batches_done(progress: &Path) -> Result<u64> {
    match std::fs::read_to_string(progress) {
        Ok(t) => t
            .trim()
            .parse()
            .map_err(|e| Error::msg(format!("reading {}: {e}", progress.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io(progress, e)),
    }
}

/// Appends batches of stories to `o.out` until it holds `o.megabytes`; each story is a prompt
/// naming 1 to 3 of `words` and what the model wrote after it.
pub fn write_corpus(
    model: &Llama2cStoryModel,
    words: &[String],
    o: &CorpusOptions,
) -> Result<CorpusWritten> {
    if o.batch == 0 {
        return Err(Error::msg("--batch must be at least 1"));
    }
    let progress = o.out.with_extension("batches");
    let existing = batches_done(&progress)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&o.out)
        .map_err(|e| Error::io(&o.out, e))?;
    let size = |file: &std::fs::File| {
        file.metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io(&o.out, e))
    };
    let target = (o.megabytes * 1e6) as u64;
    let opts = GenerateOptions {
        max_chars: o.max_chars,
        temperature: o.temperature,
        top_k: None,
        top_p: None,
        stop_at_sentence_end: true,
        seed: o.seed,
    };
    tracing::info!(
        words = words.len(),
        batches_done = existing,
        model = %model.version(),
        "writing a story corpus to {}",
        o.out.display()
    );
    let mut batch_no = existing;
    let started = Instant::now();
    let mut written_now = 0usize;
    while size(&file)? < target {
        // Batch b's word draws and stories depend on b alone, so a continued run goes on where
        // the last one stopped.
        let mut rng = rand::rngs::StdRng::seed_from_u64(stream_seed(o.seed ^ 0x5eed, batch_no));
        let prompts: Vec<String> = (0..o.batch)
            .map(|_| {
                let k = rng.gen_range(1..=3);
                let picked: Vec<&String> = (0..k)
                    .map(|_| &words[rng.gen_range(0..words.len())])
                    .collect();
                llama2c::corpus_prompt(&picked, &mut rng)
            })
            .collect();
        let streams: Vec<u64> = (0..o.batch as u64)
            .map(|i| batch_no * o.batch as u64 + i)
            .collect();
        let stories = model.generate(&prompts, &streams, &opts)?;
        let mut text = String::new();
        for (p, s) in prompts.iter().zip(&stories) {
            let story = format!("{p} {s}");
            let story = story.trim();
            // A story of one sentence taught nothing; skip it.
            if story.len() < 100 {
                continue;
            }
            text.push_str(story);
            text.push_str("\n\n");
            written_now += 1;
        }
        file.write_all(text.as_bytes())
            .map_err(|e| Error::io(&o.out, e))?;
        batch_no += 1;
        std::fs::write(&progress, batch_no.to_string()).map_err(|e| Error::io(&progress, e))?;
        if batch_no.is_multiple_of(10) {
            let mb = size(&file)? as f64 / 1e6;
            tracing::info!(
                "{mb:.1} MB, {written_now} stories this run, {:.0} stories/s",
                written_now as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(CorpusWritten {
        out: o.out.clone(),
        bytes: size(&file)?,
        stories: written_now,
        seconds: started.elapsed().as_secs_f64(),
    })
}
