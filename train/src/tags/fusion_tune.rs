//! `hashtale tune fusion`: fits the fusion weights on the dev sets' tagger outputs: a
//! calibration per source, the bias shifts that set which source leads the list and, optionally,
//! the object-photo gate.
use std::path::{Path, PathBuf};

use hashtale_models::tags::fuse::{
    fuse_with_probe, Context as ListContext, Features, FusionWeights,
};
use hashtale_models::{Error, Result};

use super::fusion_fit::{fit_calibration, fit_gate, log_loss, out_of_fold, GateFit};
use super::taggers::Outputs;
use crate::metrics::TOP_K;

/// Settings of [`tune_fusion`].
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// Fuse without the decoder (concepts + probe only).
    pub no_decoder: bool,
    /// Keep the probe from costing any dev set more than this much P@1 against the best
    /// fusion without it.
    pub max_regression: Option<f64>,
    /// Also fit the object-photo gate, with the L2 penalty `gate_l2`.
    pub gate: bool,
    pub gate_l2: f64,
    /// Where to write each dev image's set, ground truth, lists and gate score as JSON lines.
    pub per_image: Option<PathBuf>,
}

/// One dev set: its description (`data`, `split`, `images`; the fit adds its figures) and, per
/// image, the ground truth and the taggers' outputs.
pub struct DevSet {
    pub info: serde_json::Value,
    pub images: Vec<(Vec<String>, Outputs)>,
}

/// The fitted weights and each dev set's (P@1, R@5) under them.
#[derive(Debug, Clone)]
pub struct Tuned {
    pub weights: FusionWeights,
    pub per_set: Vec<(f64, f64)>,
}

/// One JSON line per dev image: its set, ground truth, the three scored lists and the gate score
/// the calibrations see.
fn write_per_image(
    path: &Path,
    sets: &[serde_json::Value],
    kept: &[Vec<(Vec<String>, Outputs)>],
) -> Result<()> {
    let mut text = String::new();
    for (info, set) in sets.iter().zip(kept) {
        for (truth, o) in set {
            let mut line = o.per_image_json(truth);
            line["set"] = info["data"].clone();
            text.push_str(&format!("{line}\n"));
        }
    }
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Fits one calibration per source on `sets` (each set weighs the same); `with_probe` says
/// whether the outputs hold the probe's lists. `note` receives progress lines.
pub fn tune_fusion(
    sets: Vec<DevSet>,
    with_probe: bool,
    opts: &TuneOptions,
    mut note: impl FnMut(String),
) -> Result<Tuned> {
    type Kept = Vec<(Vec<String>, Outputs)>;
    let (mut sets, mut kept): (Vec<serde_json::Value>, Vec<Kept>) =
        sets.into_iter().map(|s| (s.info, s.images)).unzip();
    let mut decoder_samples: Vec<(Features, bool, f64)> = Vec::new();
    let mut concept_samples: Vec<(Features, bool, f64)> = Vec::new();
    let mut probe_samples: Vec<(Features, bool, f64)> = Vec::new();
    // The gate: fitted on every dev image (each set weighs the same); the calibrations below
    // read its out-of-fold scores.
    let gate = if opts.gate {
        let (mut x, mut y, mut w) = (Vec::new(), Vec::new(), Vec::new());
        for set in &kept {
            for (truth, o) in set {
                x.push(o.pooled.clone());
                y.push(o.concepts.first().is_some_and(|t| truth.contains(&t.tag)));
                w.push(1.0 / set.len().max(1) as f64);
            }
        }
        let fit = GateFit {
            l2: opts.gate_l2,
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
        note(format!(
            "gate: {} of {} dev images right out of fold ({:.3})",
            right,
            y.len(),
            right as f64 / y.len().max(1) as f64
        ));
        Some(fit_gate(&x, &y, &w, fit))
    } else {
        None
    };
    if let Some(path) = &opts.per_image {
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
        note(format!(
            "{}: {} images, {} decoder, {} concept and {} probe hashtags",
            info["data"],
            set.len(),
            d_set.len(),
            c_set.len(),
            p_set.len()
        ));
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
    let decoder_shifts: Vec<f64> = if opts.no_decoder { vec![0.0] } else { shifts };
    // With `--max-regression`: each set's floor is its P@1 under the best two-source fusion
    // (probe left out, decoder shift by the same mean-P@1 rule) less the tolerance.
    let floors: Option<Vec<f64>> = match opts.max_regression {
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
            note(format!(
                "two-source P@1 per set (the floors before the tolerance): {per:?}"
            ));
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
        return Err(Error::msg(
            "no shift keeps every dev set within --max-regression of its P@1 without the probe; \
             tune with --no-probe (or a larger tolerance)",
        ));
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
            "decoder": !opts.no_decoder,
            "decoder_log_loss": decoder_log_loss,
            "concept_log_loss": concept_log_loss,
            "probe_log_loss": with_probe.then_some(probe_log_loss),
            "decoder_bias_shift": shift,
            "probe_bias_shift": with_probe.then_some(probe_shift),
            "max_regression": opts.max_regression,
            "gate_l2": opts.gate.then_some(opts.gate_l2),
            "mean_fused_p_at_1": mean_p1,
            "mean_fused_r_at_5": mean_r5,
        }),
    };
    Ok(Tuned { weights, per_set })
}
