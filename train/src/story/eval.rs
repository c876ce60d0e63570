//! Evaluating story models on held-out stories, the reports of `hashtale eval story`:
//! - [`conditioned`]: a hashtag-conditioned model read with its own, no and the wrong keyword
//!   prefix, beside a plain model, and optionally how often their stories echo a seed word;
//! - [`Comparison`]: story models side by side, bits/char on the same characters and the
//!   quality measures of [`quality`] on stories they generate from the same keyword sets.
//!
//! Report fields are declared in alphabetical order: the JSON keeps the key order these reports
//! had when they were built as `serde_json` maps (which sort their keys).
use std::fmt;
use std::path::Path;

use hashtale_models::story::keywords::mentions;
use hashtale_models::story::{llama2c, EvalResult, GenerateOptions, StoryModel, StoryWriter};
use hashtale_models::{Error, Result};
use serde::Serialize;

use super::quality::{self, WordList};

/// Generations run in batches of this many stories, stream `batch * 64 + i` each.
const GENERATE_BATCH: usize = 64;

/// Each story with the keywords the model's table finds in it.
fn keyworded(model: &StoryModel, stories: &[String], what: &str) -> Result<Docs> {
    let kw = model.keywords().ok_or_else(|| Error::msg(what))?;
    Ok(stories.iter().map(|s| (kw.extract(s), s.clone())).collect())
}

type Docs = Vec<(Vec<String>, String)>;

/// `n` keyword sets, cycling through the stories that have any.
fn seed_sets(docs: &[(Vec<String>, String)], n: usize) -> Vec<Vec<String>> {
    docs.iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, _)| k.clone())
        .cycle()
        .take(n)
        .collect()
}

fn no_seeds() -> Error {
    Error::msg("no held-out story has keywords to seed with")
}

/// Generates a story per keyword set in batches of 64; `gen` writes one batch given its
/// streams.
fn generate_all<T>(
    seeds: &[T],
    mut gen: impl FnMut(&[T], &[u64]) -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    let mut texts = Vec::with_capacity(seeds.len());
    for (chunk_i, chunk) in seeds.chunks(GENERATE_BATCH).enumerate() {
        let streams: Vec<u64> = (0..chunk.len() as u64)
            .map(|i| (chunk_i * GENERATE_BATCH) as u64 + i)
            .collect();
        texts.extend(gen(chunk, &streams)?);
    }
    Ok(texts)
}

/// Bits/char of one named model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelFigure {
    pub bits_per_char: f64,
    pub chars: usize,
    pub model: String,
}

/// What `eval story --conditioned` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionedReport {
    /// The conditioned model, each story after its own keyword prefix.
    pub conditioned: ModelFigure,
    /// The same model, no prefix.
    pub conditioned_no_prefix: EvalResult,
    /// The same model, each story after the next story's prefix (a control: if the model reads
    /// its hashtags, wrong ones cost bits).
    pub conditioned_other_storys_prefix: EvalResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo: Option<EchoReport>,
    pub plain: ModelFigure,
    pub stories: usize,
    pub stories_with_keywords: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EchoReport {
    pub models: EchoModels,
    pub temperature: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EchoModels {
    pub conditioned: EchoFigures,
    pub plain: EchoFigures,
}

/// How often a model's stories mention one of their seed words.
#[derive(Debug, Clone, Serialize)]
pub struct EchoFigures {
    pub echo_rate: f64,
    pub echoed: usize,
    pub generations: usize,
    /// The first five stories.
    pub samples: Vec<EchoSample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EchoSample {
    pub hashtags: Vec<String>,
    pub prompt: String,
    pub story: String,
}

/// `eval story --conditioned` of one conditioned model on some stories.
pub struct ConditionedEval<'a> {
    model: &'a StoryModel,
    stories: &'a [String],
    docs: Docs,
}

impl<'a> ConditionedEval<'a> {
    /// Fails when `model` has no keyword table (it is not hashtag-conditioned).
    pub fn new(model: &'a StoryModel, stories: &'a [String]) -> Result<Self> {
        let docs = keyworded(
            model,
            stories,
            "--conditioned needs a hashtag-conditioned model (trained with `train story --conditioned`)",
        )?;
        Ok(Self {
            model,
            stories,
            docs,
        })
    }

    /// The model against the plain model `plain`; with `echo` > 0 each also writes that many
    /// stories (at `temperature`) seeded with the stories' keywords.
    pub fn report(
        &self,
        plain: &StoryModel,
        echo: usize,
        temperature: f64,
    ) -> Result<ConditionedReport> {
        let (model, stories, docs) = (self.model, self.stories, &self.docs);
        if plain.is_conditioned() {
            return Err(Error::msg("--plain-model is a conditioned model"));
        }
        let no_prefix: Docs = stories.iter().map(|s| (Vec::new(), s.clone())).collect();
        let mismatched: Docs = docs
            .iter()
            .enumerate()
            .map(|(i, (_, s))| (docs[(i + 1) % docs.len()].0.clone(), s.clone()))
            .collect();
        let cond = model.evaluate_with_tags(docs)?;
        let cond_blind = model.evaluate_with_tags(&no_prefix)?;
        let cond_wrong = model.evaluate_with_tags(&mismatched)?;
        let plain_r = plain.evaluate_with_tags(&no_prefix)?;
        let mut report = ConditionedReport {
            conditioned: ModelFigure {
                bits_per_char: cond.bits_per_char,
                chars: cond.chars,
                model: model.version(),
            },
            conditioned_no_prefix: cond_blind,
            conditioned_other_storys_prefix: cond_wrong,
            echo: None,
            plain: ModelFigure {
                bits_per_char: plain_r.bits_per_char,
                chars: plain_r.chars,
                model: plain.version(),
            },
            stories: stories.len(),
            stories_with_keywords: docs.iter().filter(|(k, _)| !k.is_empty()).count(),
        };
        if echo > 0 {
            let seeds = seed_sets(docs, echo);
            if seeds.is_empty() {
                return Err(no_seeds());
            }
            let opts = GenerateOptions {
                temperature,
                stop_at_sentence_end: true,
                ..GenerateOptions::default()
            };
            let figures = |m: &StoryModel| -> Result<EchoFigures> {
                let texts = generate_all(&seeds, |chunk, streams| {
                    m.generate_for_tags(chunk, streams, &opts)
                })?;
                let echoed = seeds
                    .iter()
                    .zip(&texts)
                    .filter(|(k, t)| k.iter().any(|w| mentions(t, w)))
                    .count();
                let samples = seeds
                    .iter()
                    .zip(&texts)
                    .take(5)
                    .map(|(k, t)| EchoSample {
                        hashtags: k.clone(),
                        prompt: m.prompt_for(k).trim().to_string(),
                        story: t.clone(),
                    })
                    .collect();
                Ok(EchoFigures {
                    echo_rate: echoed as f64 / texts.len() as f64,
                    echoed,
                    generations: texts.len(),
                    samples,
                })
            };
            report.echo = Some(EchoReport {
                models: EchoModels {
                    conditioned: figures(model)?,
                    plain: figures(plain)?,
                },
                temperature,
            });
        }
        Ok(report)
    }
}

impl fmt::Display for ConditionedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} stories ({} with keywords), bits/char on the same {} characters:",
            self.stories, self.stories_with_keywords, self.conditioned.chars
        )?;
        writeln!(
            f,
            "  conditioned, own keyword prefix: {:.4}",
            self.conditioned.bits_per_char
        )?;
        writeln!(
            f,
            "  conditioned, no prefix:          {:.4}",
            self.conditioned_no_prefix.bits_per_char
        )?;
        writeln!(
            f,
            "  conditioned, next story's prefix: {:.4}",
            self.conditioned_other_storys_prefix.bits_per_char
        )?;
        writeln!(
            f,
            "  plain model:                     {:.4}",
            self.plain.bits_per_char
        )?;
        if let Some(e) = &self.echo {
            for (name, m) in [
                ("conditioned", &e.models.conditioned),
                ("plain", &e.models.plain),
            ] {
                writeln!(
                    f,
                    "  echo, {name}: {} of {} stories mention a seed word ({:.1}%)",
                    m.echoed,
                    m.generations,
                    100.0 * m.echo_rate
                )?;
            }
        }
        Ok(())
    }
}

/// Settings of a [`Comparison`].
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Stories generated per model (0: bits/char only).
    pub generate: usize,
    pub temperature: f64,
    /// Nucleus (None: each model's own setting).
    pub top_p: Option<f64>,
    /// How the report names the word list (see [`Comparison::with_word_list`]).
    pub word_list_name: String,
}

/// `eval story --compare`: every model on the same stories and the same keyword sets, one
/// [`Comparison::model`] call per model (the caller loads them, one at a time).
pub struct Comparison<'a> {
    stories: &'a [String],
    docs: Docs,
    seeds: Vec<Vec<String>>,
    opts: GenerateOptions,
    o: CompareOptions,
    word_list: WordList,
}

/// One model's row of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    pub bits_per_char: f64,
    /// A conditioned model scored after an empty prefix line, on the same characters: what it
    /// knows of the text apart from being told the topic.
    pub bits_per_char_without_hashtags: Option<f64>,
    pub chars: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationFigures>,
    pub model: String,
    pub path: String,
    /// How the stories were read: "own keyword prefix", "no prefix" or "from BOS".
    pub read: String,
}

/// The measures of one model's generated stories.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationFigures {
    pub chars: usize,
    pub chars_per_sec: f64,
    pub distinct_2: f64,
    pub echo_rate: f64,
    pub non_word_rate: f64,
    pub repeated_4grams: f64,
    /// The first five stories.
    pub samples: Vec<Sample>,
    pub seconds: f64,
    pub stories: usize,
    pub words: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub hashtags: Vec<String>,
    pub story: String,
}

/// The held-out human stories under the same measures (their echo is of their own keywords, so
/// it is 100% by construction and left out).
#[derive(Debug, Clone, Serialize)]
pub struct HumanFigures {
    pub distinct_2: f64,
    pub non_word_rate: f64,
    pub repeated_4grams: f64,
    pub stories: usize,
    pub words: usize,
}

/// What `eval story --compare` reports.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    pub human: Option<HumanFigures>,
    pub models: Vec<CompareRow>,
    pub stories: usize,
    pub temperature: f64,
    pub word_list: String,
    /// Stories generated per model.
    #[serde(skip)]
    pub generate: usize,
}

impl<'a> Comparison<'a> {
    /// Keyword sets come from `split_model`, the conditioned model that chose the split, so
    /// every model is asked about the same hashtags.
    pub fn new(split_model: &StoryModel, stories: &'a [String], o: CompareOptions) -> Result<Self> {
        let docs = keyworded(
            split_model,
            stories,
            "--compare needs --model to be a hashtag-conditioned model: its keyword table picks the seeds",
        )?;
        let seeds = seed_sets(&docs, o.generate);
        if o.generate > 0 && seeds.is_empty() {
            return Err(no_seeds());
        }
        let opts = GenerateOptions {
            max_chars: 500,
            temperature: o.temperature,
            top_k: None,
            top_p: o.top_p,
            stop_at_sentence_end: true,
            seed: GenerateOptions::default().seed,
        };
        Ok(Self {
            stories,
            docs,
            seeds,
            opts,
            o,
            word_list: WordList::default(),
        })
    }

    /// The word list of the non-word rate (needed only when stories are generated).
    pub fn with_word_list(mut self, word_list: WordList) -> Self {
        self.word_list = word_list;
        self
    }

    /// The row of `writer`, loaded from `path`.
    pub fn model(&self, path: &Path, writer: &StoryWriter) -> Result<CompareRow> {
        // A conditioned model reads each story after its own keyword prefix, the others read
        // the bare story; the same characters are scored either way.
        let mut without_tags = None;
        let (bpc, how) = match writer {
            StoryWriter::CharLm(m) if m.is_conditioned() => {
                let own: Docs = self
                    .docs
                    .iter()
                    .map(|(k, s)| (m.story_tags(k), s.clone()))
                    .collect();
                let none: Docs = self
                    .docs
                    .iter()
                    .map(|(_, s)| (Vec::new(), s.clone()))
                    .collect();
                without_tags = Some(m.evaluate_with_tags(&none)?.bits_per_char);
                (m.evaluate_with_tags(&own)?, "own keyword prefix")
            }
            StoryWriter::CharLm(m) => (m.evaluate(self.stories)?, "no prefix"),
            StoryWriter::Llama2c(m) => (m.evaluate(self.stories)?, "from BOS"),
        };
        let generation = if self.o.generate > 0 {
            Some(self.generation(writer)?)
        } else {
            None
        };
        Ok(CompareRow {
            bits_per_char: bpc.bits_per_char,
            bits_per_char_without_hashtags: without_tags,
            chars: bpc.chars,
            generation,
            model: writer.version(),
            path: path.display().to_string(),
            read: how.to_string(),
        })
    }

    fn generation(&self, writer: &StoryWriter) -> Result<GenerationFigures> {
        let started = std::time::Instant::now();
        let mut tag_lists = Vec::with_capacity(self.seeds.len());
        let texts = generate_all(&self.seeds, |chunk, streams| {
            let tags: Vec<Vec<String>> = chunk.iter().map(|k| writer.story_tags(k)).collect();
            // A llama2.c model's prompt already names the hashtags: only what it wrote after
            // the prompt is measured, so echo means the same for every model.
            let out = match writer {
                StoryWriter::Llama2c(m) => {
                    let prompts: Vec<String> =
                        tags.iter().map(|t| llama2c::prompt_for_tags(t)).collect();
                    m.generate(&prompts, streams, &self.opts)?
                }
                w => w.generate_for_tags(&tags, streams, &self.opts)?,
            };
            tag_lists.extend(tags);
            Ok(out)
        })?;
        let secs = started.elapsed().as_secs_f64();
        let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
        let (non_word, n_words) = self.word_list.non_word_rate(&texts);
        let samples = tag_lists
            .iter()
            .zip(&texts)
            .take(5)
            .map(|(k, t)| Sample {
                hashtags: k.clone(),
                story: t.clone(),
            })
            .collect();
        Ok(GenerationFigures {
            chars,
            chars_per_sec: chars as f64 / secs.max(1e-9),
            distinct_2: quality::distinct_2(&texts),
            echo_rate: quality::echo_rate(&tag_lists, &texts),
            non_word_rate: non_word,
            repeated_4grams: quality::repeated_4gram_rate(&texts),
            samples,
            seconds: secs,
            stories: texts.len(),
            words: n_words,
        })
    }

    /// The report of the models' rows, with the human stories' figures when stories were
    /// generated.
    pub fn report(self, models: Vec<CompareRow>) -> CompareReport {
        let human = (self.o.generate > 0).then(|| {
            let (non_word, n_words) = self.word_list.non_word_rate(self.stories);
            HumanFigures {
                distinct_2: quality::distinct_2(self.stories),
                non_word_rate: non_word,
                repeated_4grams: quality::repeated_4gram_rate(self.stories),
                stories: self.stories.len(),
                words: n_words,
            }
        });
        CompareReport {
            human,
            models,
            stories: self.stories.len(),
            temperature: self.o.temperature,
            word_list: self.o.word_list_name,
            generate: self.o.generate,
        }
    }
}

impl fmt::Display for CompareReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} stories; bits/char on the same characters, then {} generated stories per model:",
            self.stories, self.generate
        )?;
        for r in &self.models {
            write!(
                f,
                "  {:<44} {:.4} bits/char ({})",
                r.model, r.bits_per_char, r.read
            )?;
            if let Some(b) = r.bits_per_char_without_hashtags {
                write!(f, ", {b:.4} without hashtags")?;
            }
            if let Some(g) = &r.generation {
                write!(
                    f,
                    "; non-words {:.2}%, echo {:.1}%, repeated 4-grams {:.1}%, distinct-2 {:.3}, {:.0} chars/s",
                    100.0 * g.non_word_rate,
                    100.0 * g.echo_rate,
                    100.0 * g.repeated_4grams,
                    g.distinct_2,
                    g.chars_per_sec
                )?;
            }
            writeln!(f)?;
        }
        if let Some(h) = &self.human {
            writeln!(
                f,
                "  {:<44} non-words {:.2}%, repeated 4-grams {:.1}%, distinct-2 {:.3}",
                "the held-out human stories",
                100.0 * h.non_word_rate,
                100.0 * h.repeated_4grams,
                h.distinct_2
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reports print their keys in the order a `serde_json` map (sorted) gives them.
    fn assert_sorted_keys<R: Serialize>(r: &R) {
        let direct = serde_json::to_string_pretty(r).unwrap();
        let via_map = serde_json::to_string_pretty(&serde_json::to_value(r).unwrap()).unwrap();
        assert_eq!(direct, via_map);
    }

    #[test]
    fn report_keys_are_in_map_order() {
        let bpc = EvalResult {
            bits_per_char: 2.5,
            chars: 10,
        };
        let figure = ModelFigure {
            bits_per_char: 2.0,
            chars: 10,
            model: "m".into(),
        };
        let echo = EchoFigures {
            echo_rate: 0.5,
            echoed: 1,
            generations: 2,
            samples: vec![EchoSample {
                hashtags: vec!["beach".into()],
                prompt: "#beach".into(),
                story: "A day.".into(),
            }],
        };
        assert_sorted_keys(&ConditionedReport {
            conditioned: figure.clone(),
            conditioned_no_prefix: bpc,
            conditioned_other_storys_prefix: bpc,
            echo: Some(EchoReport {
                models: EchoModels {
                    conditioned: echo.clone(),
                    plain: echo,
                },
                temperature: 0.8,
            }),
            plain: figure,
            stories: 3,
            stories_with_keywords: 2,
        });
        assert_sorted_keys(&CompareReport {
            human: Some(HumanFigures {
                distinct_2: 0.9,
                non_word_rate: 0.1,
                repeated_4grams: 0.0,
                stories: 3,
                words: 30,
            }),
            models: vec![CompareRow {
                bits_per_char: 2.0,
                bits_per_char_without_hashtags: None,
                chars: 10,
                generation: Some(GenerationFigures {
                    chars: 100,
                    chars_per_sec: 1000.0,
                    distinct_2: 0.8,
                    echo_rate: 0.5,
                    non_word_rate: f64::NAN,
                    repeated_4grams: 0.1,
                    samples: vec![Sample {
                        hashtags: vec!["dog".into()],
                        story: "A dog.".into(),
                    }],
                    seconds: 0.1,
                    stories: 4,
                    words: 20,
                }),
                model: "m".into(),
                path: "p".into(),
                read: "no prefix".into(),
            }],
            stories: 3,
            temperature: 0.8,
            word_list: "words.txt".into(),
            generate: 4,
        });
    }
}
