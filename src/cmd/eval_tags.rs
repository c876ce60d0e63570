//! `hashtale eval tags`: hashtag metrics of the taggers (decoder, concepts, probe, fused) or the
//! frequency prior on a split, and `hashtale tune fusion`, which fits the fusion weights on dev
//! sets.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::Device;
use clap::Args;
use hashtale_models::encoder::{EfficientNetLite, ImageEncoder, LiteVariant};
use hashtale_models::tags::concepts::{ConceptOptions, ConceptTable, ConceptTagger};
use hashtale_models::tags::fuse::{
    fuse_with_probe, Context as ListContext, Features, FusionWeights,
};
use hashtale_models::tags::probe::LinearProbe;
use hashtale_models::tags::{fusion_path, BeamOptions, ScoredTag, TagModel, TagModelConfig};
use hashtale_train::metrics::{bleu1, bleu1_seed, evaluate, frequency_prior, TOP_K};
use hashtale_train::tags::features::FeatureSet;
use hashtale_train::tags::fusion_fit::{fit_calibration, fit_gate, log_loss, out_of_fold, GateFit};

use super::dataset::{load_split_features, split_names, DataArgs};

#[derive(Args)]
pub struct EvalTagsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Split to evaluate (default: dev, or all when the folder has no splits).
    #[arg(long)]
    pub split: Option<String>,
    /// Hashtag model directory (default: the shipped model). Its encoder is used.
    #[arg(long, conflicts_with = "prior")]
    pub model: Option<PathBuf>,
    /// Evaluate the most-frequent-tags prior of the train split instead of a model.
    #[arg(long)]
    pub prior: bool,
    /// Which taggers: fused (decoder + concept hashtags + the probe, where the model has one),
    /// decoder, concepts or probe.
    #[arg(long, value_parser = ["fused", "decoder", "concepts", "probe"], default_value = "decoder")]
    pub source: String,
    /// Fusion weights (default: `fusion.json` in the model's directory).
    #[arg(long)]
    pub fusion: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub beam: usize,
    /// At least this many tags per image from the decoders.
    #[arg(long, default_value_t = 3)]
    pub min_tags: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write each image's ground truth and the taggers' scored hashtags as JSON lines.
    #[arg(long)]
    pub per_image: Option<PathBuf>,
    /// Fuse without the model's linear probe even where it has one (the two-source fusion;
    /// give weights fitted without it with `--fusion`).
    #[arg(long)]
    pub no_probe: bool,
    /// Fuse without the decoder (concepts + probe; weights fitted with `tune fusion
    /// --no-decoder`).
    #[arg(long)]
    pub no_decoder: bool,
}

#[derive(Args)]
pub struct TuneFusionArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Hashtag model directory (default: the shipped model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where to write the weights (the pipeline reads `fusion.json` in the model's directory).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub beam: usize,
    #[arg(long, default_value_t = 3)]
    pub min_tags: usize,
    /// Fuse without the model's linear probe even where it has one (the two-source fusion).
    #[arg(long)]
    pub no_probe: bool,
    /// Fuse without the decoder (concepts + probe only).
    #[arg(long)]
    pub no_decoder: bool,
    /// Keep the probe from costing any dev set more than this much P@1 against the best
    /// fusion without it (e.g. 0.01): only shifts within that floor are considered.
    #[arg(long)]
    pub max_regression: Option<f64>,
    /// Also fit the object-photo gate (a logistic regression on the pooled encoder vector that
    /// predicts whether the first concept hashtag is relevant) and use its score as one more
    /// calibration term; the calibrations see out-of-fold gate scores.
    #[arg(long)]
    pub gate: bool,
    /// The gate's L2 penalty on standardised features.
    #[arg(long, default_value_t = 0.05)]
    pub gate_l2: f64,
    /// Also write each dev image's set, ground truth, the taggers' scored hashtags and its
    /// out-of-fold gate score as JSON lines (for studying the fusion offline).
    #[arg(long)]
    pub per_image: Option<PathBuf>,
}

/// The split an evaluation reads when none is named: dev, or all without a splits file.
fn default_split(a: &DataArgs) -> anyhow::Result<String> {
    let names = split_names(a, a.single()?)?;
    Ok(if names.iter().any(|n| n == "dev") {
        "dev".into()
    } else {
        "all".into()
    })
}

/// The taggers of one evaluation, over cached features.
struct Taggers {
    model: Option<TagModel>,
    concepts: Option<ConceptTagger>,
    probe: Option<LinearProbe>,
    beam: BeamOptions,
}

/// What the taggers say about one image.
struct Outputs {
    decoder: Vec<ScoredTag>,
    /// The decoder's list filled to 5 from its next-tag distribution.
    fill: Vec<String>,
    concepts: Vec<ScoredTag>,
    probe: Vec<ScoredTag>,
    /// The pooled encoder vector, for the fusion's gate.
    pooled: Vec<f32>,
    /// The gate's score (0: no gate), set by whoever fuses.
    object_photo: f32,
}

impl Outputs {
    /// The image's ground truth, each tagger's scored hashtags and its gate score (`--per-image`).
    fn per_image_json(&self, truth: &[String]) -> serde_json::Value {
        let score = |l: &[ScoredTag]| -> Vec<(String, f32)> {
            l.iter().map(|t| (t.tag.clone(), t.score)).collect()
        };
        serde_json::json!({
            "truth": truth,
            "decoder": score(&self.decoder),
            "concepts": score(&self.concepts),
            "probe": score(&self.probe),
            "object_photo": self.object_photo,
        })
    }
}

/// Which taggers to load.
#[derive(Clone, Copy)]
struct Want {
    model: bool,
    concepts: bool,
    /// Load the model directory's probe: `Some(true)` requires one, `Some(false)` takes it
    /// where it exists.
    probe: Option<bool>,
}

impl Taggers {
    fn load(
        paths: &hashtale_models::ModelPaths,
        encoder: &EfficientNetLite,
        want: Want,
        beam: usize,
        min_tags: usize,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let dir = &paths.tag_model;
        let probe = match want.probe {
            Some(required) if required || LinearProbe::exists(dir) => {
                let p = LinearProbe::load(dir, device)
                    .with_context(|| format!("loading the probe in {}", dir.display()))?;
                if p.config.encoder != encoder.name() {
                    bail!(
                        "the probe in {} reads {} features, not {}",
                        dir.display(),
                        p.config.encoder,
                        encoder.name()
                    );
                }
                Some(p)
            }
            _ => None,
        };
        let (with_model, with_concepts) = (want.model, want.concepts);
        let model = if with_model {
            let m = TagModel::load(dir, device)
                .with_context(|| format!("loading the hashtag model {}", dir.display()))?;
            if m.config.encoder != encoder.name() {
                bail!(
                    "{} was trained on {} features, not {}",
                    dir.display(),
                    m.config.encoder,
                    encoder.name()
                );
            }
            Some(m)
        } else {
            None
        };
        let concepts = if with_concepts {
            let table = ConceptTable::load(&paths.concepts)?;
            let (w, b) = encoder.classifier_parts();
            Some(ConceptTagger::new(table, w, b)?)
        } else {
            None
        };
        let max_tags = model.as_ref().map_or(10, |m| m.config.max_tags);
        Ok(Self {
            model,
            concepts,
            probe,
            beam: BeamOptions {
                beam_size: beam,
                max_tags,
                min_tags,
            },
        })
    }

    /// Per image: the decoder's tags with its next-tag fill, the concept and the probe tags.
    fn run(
        &self,
        features: &FeatureSet,
        rows: &[u32],
        device: &Device,
    ) -> anyhow::Result<Vec<Outputs>> {
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(64) {
            let enc = features.batch(chunk, device)?;
            let decoded = match &self.model {
                Some(m) => m
                    .predict(&enc, self.beam)?
                    .into_iter()
                    .map(|p| {
                        let fill = p.filled(TOP_K);
                        (p.tags, fill)
                    })
                    .collect(),
                None => vec![(vec![], vec![]); chunk.len()],
            };
            let concepts = match &self.concepts {
                Some(c) => c.tag(
                    &enc,
                    ConceptOptions {
                        max_tags: self.beam.max_tags,
                        ..ConceptOptions::default()
                    },
                )?,
                None => vec![vec![]; chunk.len()],
            };
            let probe = match &self.probe {
                Some(p) => p.tag(&enc, self.beam.max_tags)?,
                None => vec![vec![]; chunk.len()],
            };
            let pooled = enc
                .pooled
                .to_dtype(candle_core::DType::F32)?
                .to_vec2::<f32>()?;
            out.extend(
                decoded
                    .into_iter()
                    .zip(concepts)
                    .zip(probe)
                    .zip(pooled)
                    .map(|((((decoder, fill), concepts), probe), pooled)| Outputs {
                        decoder,
                        fill,
                        concepts,
                        probe,
                        pooled,
                        object_photo: 0.0,
                    }),
            );
        }
        Ok(out)
    }
}

fn names(tags: &[ScoredTag]) -> Vec<String> {
    tags.iter().map(|t| t.tag.clone()).collect()
}

/// The encoder an evaluation needs: the model's own when a model is read.
fn encoder_for(a: &DataArgs, dir: &Path, reads_model: bool) -> anyhow::Result<DataArgs> {
    let mut data = a.clone();
    if reads_model {
        let text = std::fs::read_to_string(dir.join("config.json"))
            .with_context(|| format!("reading {}/config.json", dir.display()))?;
        let cfg: TagModelConfig = serde_json::from_str(&text)
            .with_context(|| format!("reading {}/config.json", dir.display()))?;
        let variant = LiteVariant::parse(&cfg.encoder)
            .with_context(|| format!("{}: unknown encoder `{}`", dir.display(), cfg.encoder))?;
        data.encoder = variant.name().to_string();
    }
    Ok(data)
}

pub fn run(a: EvalTagsArgs) -> anyhow::Result<()> {
    let device = hashtale_models::device::best_device();
    let split = match &a.split {
        Some(s) => s.clone(),
        None => default_split(&a.data)?,
    };
    let has_train = split_names(&a.data, a.data.single()?)?
        .iter()
        .any(|n| n == "train");
    if a.prior && !has_train {
        bail!("--prior needs a train split, and this folder has none");
    }
    let reads_model = !a.prior && a.source != "concepts";
    let fused = a.source == "fused";
    let paths = super::models::offline_with_tag_model(a.model.as_ref())?;
    let data = encoder_for(&a.data, &paths.tag_model, reads_model)?;
    // Only the prior reads the train split.
    let splits: Vec<&str> = if a.prior && split != "train" {
        vec![split.as_str(), "train"]
    } else {
        vec![split.as_str()]
    };
    let (encoder, features, mut split_rows) = load_split_features(&data, &paths, &splits, &device)?;
    let (rows, gt) = split_rows.remove(0);
    let mut own: Vec<Vec<String>> = Vec::with_capacity(rows.len());
    let mut filled: Vec<Vec<String>> = Vec::with_capacity(rows.len());
    let label;
    if a.prior {
        let (_, train) = split_rows.pop().context("the train split")?;
        let prior = frequency_prior(&train, TOP_K);
        own = vec![prior.clone(); rows.len()];
        filled = own.clone();
        label = "frequency prior".to_string();
    } else {
        let want = Want {
            model: a.source == "decoder" || (fused && !a.no_decoder),
            concepts: a.source == "concepts" || fused,
            probe: match a.source.as_str() {
                "probe" => Some(true),
                "fused" if !a.no_probe => Some(false),
                _ => None,
            },
        };
        let taggers = Taggers::load(&paths, &encoder, want, a.beam, a.min_tags, &device)?;
        let fusion: FusionWeights = if a.source == "fused" {
            let path = a
                .fusion
                .clone()
                .unwrap_or_else(|| fusion_path(&paths.tag_model));
            serde_json::from_slice(
                &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            )?
        } else {
            FusionWeights::default()
        };
        let cells = features.grid.dim(1)?;
        let mut outputs = taggers.run(&features, &rows, &device)?;
        if let Some(gate) = &fusion.gate {
            for o in &mut outputs {
                o.object_photo = gate.score(&o.pooled);
            }
        }
        if let Some(path) = &a.per_image {
            let text: String = outputs
                .iter()
                .zip(&gt)
                .map(|(o, truth)| format!("{}\n", o.per_image_json(truth)))
                .collect();
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        for o in outputs {
            let list = match a.source.as_str() {
                "decoder" => {
                    own.push(names(&o.decoder));
                    filled.push(o.fill);
                    continue;
                }
                "concepts" => o.concepts,
                "probe" => o.probe,
                _ => fuse_with_probe(
                    &o.decoder,
                    &o.concepts,
                    &o.probe,
                    o.object_photo,
                    &fusion,
                    taggers.beam.max_tags,
                    cells,
                ),
            };
            own.push(names(&list));
            filled.push(names(&list).into_iter().take(TOP_K).collect());
        }
        let mut model = taggers
            .model
            .as_ref()
            .map(|m| format!(" with {}", m.version()))
            .unwrap_or_default();
        if let Some(p) = &taggers.probe {
            model.push_str(&format!(" + probe-{}", p.digest));
        }
        label = format!("{} on {}{model}", a.source, encoder.name());
    }
    let items: Vec<(Vec<String>, Vec<String>)> = gt.iter().cloned().zip(filled).collect();
    let mut m = evaluate(&items);
    // BLEU-1 compares the model's own list (not the filled one) with the ground truth.
    let n = gt.len().max(1) as f64;
    m.bleu1 = gt.iter().zip(&own).map(|(g, p)| bleu1(p, g)).sum::<f64>() / n;
    m.bleu1_seed = gt
        .iter()
        .zip(&own)
        .map(|(g, p)| bleu1_seed(g, p))
        .sum::<f64>()
        / n;
    if a.json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        let mean_len = own.iter().map(Vec::len).sum::<usize>() as f64 / n;
        println!(
            "{label} on {} [{split}]: {} images",
            a.data.single()?.display(),
            m.images
        );
        println!(
            "  P@1 {:.4}  R@5 {:.4}  A@5 {:.4}",
            m.p_at_1, m.r_at_5, m.a_at_5
        );
        println!(
            "  per-word (5 tags/image) P {:.4}  R {:.4}  F1 {:.4}  N+ {}",
            m.word_precision, m.word_recall, m.word_f1, m.n_plus
        );
        println!(
            "  BLEU-1 {:.4}  BLEU-1 (seed deck) {:.4}",
            m.bleu1, m.bleu1_seed
        );
        println!("  mean tags emitted {mean_len:.2}; decoder lists shorter than 5 filled from its next-tag distribution");
    }
    Ok(())
}

/// One JSON line per dev image: its set, ground truth, the three scored lists and the gate score
/// the calibrations see.
fn write_per_image(
    path: &Path,
    sets: &[serde_json::Value],
    kept: &[Vec<(Vec<String>, Outputs)>],
) -> anyhow::Result<()> {
    let mut text = String::new();
    for (info, set) in sets.iter().zip(kept) {
        for (truth, o) in set {
            let mut line = o.per_image_json(truth);
            line["set"] = info["data"].clone();
            text.push_str(&format!("{line}\n"));
        }
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Fits one calibration per source on the dev split of every `--data` folder (each folder
/// weighs the same), and writes the fusion weights.
pub fn run_tune(a: TuneFusionArgs) -> anyhow::Result<()> {
    let device = hashtale_models::device::best_device();
    let paths = super::models::offline_with_tag_model(a.model.as_ref())?;
    let mut decoder_samples: Vec<(Features, bool, f64)> = Vec::new();
    let mut concept_samples: Vec<(Features, bool, f64)> = Vec::new();
    let mut probe_samples: Vec<(Features, bool, f64)> = Vec::new();
    let mut sets = Vec::new();
    // Per dev set: each image's ground truth and the lists, for choosing the bias shifts.
    let mut kept: Vec<Vec<(Vec<String>, Outputs)>> = Vec::new();
    let mut with_probe = false;
    for folder in &a.data.data {
        let mut one = a.data.clone();
        one.data = vec![folder.clone()];
        let one = encoder_for(&one, &paths.tag_model, true)?;
        let split = default_split(&one)?;
        let (encoder, features, mut rows) =
            load_split_features(&one, &paths, &[split.as_str()], &device)?;
        let (rows, gt) = rows.remove(0);
        let taggers = Taggers::load(
            &paths,
            &encoder,
            Want {
                model: !a.no_decoder,
                concepts: true,
                probe: if a.no_probe { None } else { Some(false) },
            },
            a.beam,
            a.min_tags,
            &device,
        )?;
        with_probe = taggers.probe.is_some();
        let outputs = taggers.run(&features, &rows, &device)?;
        sets.push(serde_json::json!({
            "data": folder.display().to_string(),
            "split": split,
            "images": rows.len(),
        }));
        kept.push(gt.into_iter().zip(outputs).collect());
    }
    // The gate: fitted on every dev image (each set weighs the same); the calibrations below
    // read its out-of-fold scores.
    let gate = if a.gate {
        let (mut x, mut y, mut w) = (Vec::new(), Vec::new(), Vec::new());
        for set in &kept {
            for (truth, o) in set {
                x.push(o.pooled.clone());
                y.push(o.concepts.first().is_some_and(|t| truth.contains(&t.tag)));
                w.push(1.0 / set.len().max(1) as f64);
            }
        }
        let fit = GateFit {
            l2: a.gate_l2,
            ..GateFit::default()
        };
        let oof = out_of_fold(&x, &y, &w, 5, fit);
        let mut next = oof.into_iter();
        for set in &mut kept {
            for (_, o) in set.iter_mut() {
                o.object_photo = next.next().expect("one score per image");
            }
        }
        let right = kept
            .iter()
            .flatten()
            .zip(&y)
            .filter(|((_, o), &t)| (o.object_photo > 0.5) == t)
            .count();
        eprintln!(
            "gate: {} of {} dev images right out of fold ({:.3})",
            right,
            y.len(),
            right as f64 / y.len().max(1) as f64
        );
        Some(fit_gate(&x, &y, &w, fit))
    } else {
        None
    };
    if let Some(path) = &a.per_image {
        write_per_image(path, &sets, &kept)?;
    }
    for (set, info) in kept.iter().zip(sets.iter_mut()) {
        let (mut d_set, mut c_set, mut p_set) = (Vec::new(), Vec::new(), Vec::new());
        for (truth, o) in set {
            let ctx = ListContext::of(&o.decoder, &o.concepts, &o.probe).gated(o.object_photo);
            for (list, samples) in [
                (&o.decoder, &mut d_set),
                (&o.concepts, &mut c_set),
                (&o.probe, &mut p_set),
            ] {
                for t in list {
                    samples.push((ctx.with(t.score), truth.contains(&t.tag)));
                }
            }
        }
        for (one, samples) in [
            (&d_set, &mut decoder_samples),
            (&c_set, &mut concept_samples),
            (&p_set, &mut probe_samples),
        ] {
            let w = 1.0 / one.len().max(1) as f64;
            samples.extend(one.iter().map(|&(s, y)| (s, y, w)));
        }
        info["decoder_tags"] = serde_json::json!(d_set.len());
        info["concept_tags"] = serde_json::json!(c_set.len());
        info["probe_tags"] = serde_json::json!(p_set.len());
        eprintln!(
            "{}: {} images, {} decoder, {} concept and {} probe hashtags",
            info["data"],
            set.len(),
            d_set.len(),
            c_set.len(),
            p_set.len()
        );
    }
    let fit = |samples: &[(Features, bool, f64)]| {
        let c = fit_calibration(samples);
        (c, log_loss(c, samples))
    };
    let (mut decoder, decoder_log_loss) = fit(&decoder_samples);
    let (concepts, concept_log_loss) = fit(&concept_samples);
    let (mut probe, probe_log_loss) = fit(&probe_samples);
    // The calibrations fit each tag's relevance; which source leads the list is then set by one
    // shift of the decoder's bias (and one of the probe's), chosen for the best mean P@1 over
    // the dev sets (each set weighs the same), then the best mean R@5; ties go to the smallest
    // shifts.
    let figures = |w: &FusionWeights, set: &[(Vec<String>, Outputs)]| -> (f64, f64) {
        let (mut p1, mut r5) = (0.0, 0.0);
        for (truth, o) in set {
            let f = fuse_with_probe(
                &o.decoder,
                &o.concepts,
                &o.probe,
                o.object_photo,
                w,
                TOP_K,
                49,
            );
            if f.first().is_some_and(|t| truth.contains(&t.tag)) {
                p1 += 1.0;
            }
            let mut distinct = truth.clone();
            distinct.sort();
            distinct.dedup();
            let hits = distinct
                .iter()
                .filter(|g| f.iter().any(|t| &t.tag == *g))
                .count();
            r5 += hits as f64 / distinct.len().max(1) as f64;
        }
        let n = set.len().max(1) as f64;
        (p1 / n, r5 / n)
    };
    let shifts: Vec<f64> = (-8..=12).map(|s| s as f64 * 0.25).collect();
    let probe_shifts: Vec<f64> = if with_probe {
        shifts.clone()
    } else {
        vec![0.0]
    };
    let decoder_shifts: Vec<f64> = if a.no_decoder { vec![0.0] } else { shifts };
    // With `--max-regression`: each set's floor is its P@1 under the best two-source fusion
    // (probe left out, decoder shift by the same mean-P@1 rule) less the tolerance.
    let floors: Option<Vec<f64>> = match a.max_regression {
        Some(tolerance) if with_probe => {
            let mut base: Option<(f64, Vec<f64>)> = None;
            for &ds in &decoder_shifts {
                let mut d = decoder;
                d.bias += ds;
                let w = FusionWeights {
                    decoder: d,
                    concepts,
                    probe: None,
                    gate: None,
                    fitted_on: serde_json::Value::Null,
                };
                let per: Vec<f64> = kept.iter().map(|set| figures(&w, set).0).collect();
                let mean = per.iter().sum::<f64>() / per.len().max(1) as f64;
                if base.as_ref().is_none_or(|(m, _)| mean > m + 1e-12) {
                    base = Some((mean, per));
                }
            }
            let (_, per) = base.expect("at least one shift tried");
            eprintln!("two-source P@1 per set (the floors before the tolerance): {per:?}");
            Some(per.into_iter().map(|p| p - tolerance).collect())
        }
        _ => None,
    };
    // (mean P@1, mean R@5, decoder shift, probe shift, per-set figures)
    type Choice = (f64, f64, f64, f64, Vec<(f64, f64)>);
    let mut best: Option<Choice> = None;
    for &ds in &decoder_shifts {
        for &ps in &probe_shifts {
            let mut d = decoder;
            d.bias += ds;
            let mut p = probe;
            p.bias += ps;
            let w = FusionWeights {
                decoder: d,
                concepts,
                probe: with_probe.then_some(p),
                gate: None,
                fitted_on: serde_json::Value::Null,
            };
            let per_set: Vec<(f64, f64)> = kept.iter().map(|set| figures(&w, set)).collect();
            tracing::debug!(
                decoder_shift = ds,
                probe_shift = ps,
                ?per_set,
                "fusion shift"
            );
            if let Some(floors) = &floors {
                if per_set
                    .iter()
                    .zip(floors)
                    .any(|(f, floor)| f.0 < floor - 1e-12)
                {
                    continue;
                }
            }
            let n = per_set.len().max(1) as f64;
            let p1 = per_set.iter().map(|f| f.0).sum::<f64>() / n;
            let r5 = per_set.iter().map(|f| f.1).sum::<f64>() / n;
            let size = ds.abs() + ps.abs();
            let better = match &best {
                None => true,
                Some((bp, br, bd, bps, _)) => {
                    let bsize = bd.abs() + bps.abs();
                    p1 > bp + 1e-12
                        || (p1 > bp - 1e-12
                            && (r5 > br + 1e-12 || (r5 > br - 1e-12 && size < bsize)))
                }
            };
            if better {
                best = Some((p1, r5, ds, ps, per_set));
            }
        }
    }
    let Some((mean_p1, mean_r5, shift, probe_shift, per_set)) = best else {
        bail!(
            "no shift keeps every dev set within --max-regression of its P@1 without the probe; \
             tune with --no-probe (or a larger tolerance)"
        );
    };
    decoder.bias += shift;
    probe.bias += probe_shift;
    for (set, (p1, r5)) in sets.iter_mut().zip(&per_set) {
        set["fused_p_at_1"] = serde_json::json!(p1);
        set["fused_r_at_5"] = serde_json::json!(r5);
    }
    let weights = FusionWeights {
        decoder,
        concepts,
        probe: with_probe.then_some(probe),
        gate,
        fitted_on: serde_json::json!({
            "command": "hashtale tune fusion",
            "sets": sets,
            "decoder": !a.no_decoder,
            "decoder_log_loss": decoder_log_loss,
            "concept_log_loss": concept_log_loss,
            "probe_log_loss": with_probe.then_some(probe_log_loss),
            "decoder_bias_shift": shift,
            "probe_bias_shift": with_probe.then_some(probe_shift),
            "max_regression": a.max_regression,
            "gate_l2": a.gate.then_some(a.gate_l2),
            "mean_fused_p_at_1": mean_p1,
            "mean_fused_r_at_5": mean_r5,
        }),
    };
    std::fs::write(&a.out, serde_json::to_string_pretty(&weights)? + "\n")
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "decoder {decoder:?}\nconcepts {concepts:?}\nprobe {:?}\nper set (P@1, R@5) {per_set:?}\nwrote {}",
        weights.probe,
        a.out.display()
    );
    Ok(())
}
