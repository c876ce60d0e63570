//! Fitting the fusion (`hashtale tune fusion`): the photo gate, a logistic regression on the
//! pooled vector by Nesterov's accelerated gradient, and each source's calibration by Newton's
//! method. What they produce, and how it is applied, is `hashtale_models::tags::{gate, fuse}`.
use hashtale_models::tags::fuse::{sigmoid, Calibration, Features, N};
use hashtale_models::tags::gate::PhotoGate;

/// Fitting options of [`fit_gate`].
#[derive(Debug, Clone, Copy)]
pub struct GateFit {
    /// L2 penalty on the standardised weights (the mean log-loss is the other term).
    pub l2: f64,
    pub iterations: usize,
}

impl Default for GateFit {
    fn default() -> Self {
        Self {
            l2: 0.05,
            iterations: 400,
        }
    }
}

/// Fits a gate to (pooled vector, relevant, sample weight) rows.
pub fn fit_gate(x: &[Vec<f32>], y: &[bool], w: &[f64], fit: GateFit) -> PhotoGate {
    let n = x.len();
    let d = x.first().map_or(0, Vec::len);
    if n == 0 || d == 0 {
        return PhotoGate {
            bias: 0.0,
            weights: vec![0.0; d],
        };
    }
    let total: f64 = w.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let sw: Vec<f64> = w.iter().map(|v| v / total).collect();
    // Standardise each feature (weighted mean and spread).
    let mut mean = vec![0.0f64; d];
    for (row, &s) in x.iter().zip(&sw) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += s * v as f64;
        }
    }
    let mut spread = vec![0.0f64; d];
    for (row, &s) in x.iter().zip(&sw) {
        for ((q, &v), m) in spread.iter_mut().zip(row).zip(&mean) {
            *q += s * (v as f64 - m).powi(2);
        }
    }
    let spread: Vec<f64> = spread.iter().map(|q| q.sqrt().max(1e-6)).collect();
    let z: Vec<Vec<f64>> = x
        .iter()
        .map(|row| {
            row.iter()
                .zip(&mean)
                .zip(&spread)
                .map(|((&v, m), s)| (v as f64 - m) / s)
                .collect()
        })
        .collect();
    let target: Vec<f64> = y.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
    // Gradient of the penalised mean log-loss at (bias, weights), parameters as one vector.
    let gradient = |theta: &[f64]| -> Vec<f64> {
        let mut g = vec![0.0f64; d + 1];
        for ((row, t), s) in z.iter().zip(&target).zip(&sw) {
            let logit = theta[0] + row.iter().zip(&theta[1..]).map(|(a, b)| a * b).sum::<f64>();
            let r = s * (1.0 / (1.0 + (-logit).exp()) - t);
            g[0] += r;
            for (gi, a) in g[1..].iter_mut().zip(row) {
                *gi += r * a;
            }
        }
        for (gi, t) in g[1..].iter_mut().zip(&theta[1..]) {
            *gi += fit.l2 * t;
        }
        g
    };
    // Step 1/L, with L bounding the Hessian: ¼·λmax(ZᵀSZ) (power iteration) + l2.
    let mut v = vec![1.0f64 / ((d + 1) as f64).sqrt(); d + 1];
    let mut lambda = 1.0;
    for _ in 0..30 {
        let mut next = vec![0.0f64; d + 1];
        for (row, s) in z.iter().zip(&sw) {
            let dot = v[0] + row.iter().zip(&v[1..]).map(|(a, b)| a * b).sum::<f64>();
            next[0] += s * dot;
            for (ni, a) in next[1..].iter_mut().zip(row) {
                *ni += s * dot * a;
            }
        }
        lambda = next.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
        v = next.iter().map(|a| a / lambda).collect();
    }
    let step = 1.0 / (0.25 * lambda * 1.05 + fit.l2);
    let mut theta = vec![0.0f64; d + 1];
    let mut previous = theta.clone();
    for k in 0..fit.iterations {
        let momentum = k as f64 / (k as f64 + 3.0);
        let look: Vec<f64> = theta
            .iter()
            .zip(&previous)
            .map(|(t, p)| t + momentum * (t - p))
            .collect();
        let g = gradient(&look);
        previous = theta;
        theta = look.iter().zip(&g).map(|(l, gi)| l - step * gi).collect();
    }
    // Fold the standardisation in: w·(x − m)/s + b = (w/s)·x + (b − Σ w·m/s).
    let weights: Vec<f64> = theta[1..].iter().zip(&spread).map(|(t, s)| t / s).collect();
    let bias = theta[0] - weights.iter().zip(&mean).map(|(a, m)| a * m).sum::<f64>();
    PhotoGate {
        bias: bias as f32,
        weights: weights.into_iter().map(|a| a as f32).collect(),
    }
}

/// Out-of-fold gate scores: row i is scored by a gate fitted on the other folds (fold = the
/// row's index modulo `folds`), so a calibration fitted on them sees the gate as on new photos.
pub fn out_of_fold(x: &[Vec<f32>], y: &[bool], w: &[f64], folds: usize, fit: GateFit) -> Vec<f32> {
    let folds = folds.max(2);
    let mut out = vec![0.0f32; x.len()];
    for k in 0..folds {
        let keep: Vec<usize> = (0..x.len()).filter(|i| i % folds != k).collect();
        let gate = fit_gate(
            &keep.iter().map(|&i| x[i].clone()).collect::<Vec<_>>(),
            &keep.iter().map(|&i| y[i]).collect::<Vec<_>>(),
            &keep.iter().map(|&i| w[i]).collect::<Vec<_>>(),
            fit,
        );
        for i in (0..x.len()).filter(|i| i % folds == k) {
            out[i] = gate.score(&x[i]);
        }
    }
    out
}

/// Fits a calibration to (features, relevant, sample weight) triples by Newton's method on the
/// weighted log-loss, with a small ridge towards the identity so separable data stays finite.
pub fn fit_calibration(samples: &[(Features, bool, f64)]) -> Calibration {
    let rows: Vec<([f64; N], f64, f64)> = samples
        .iter()
        .map(|(x, y, w)| (x.row(), if *y { 1.0 } else { 0.0 }, *w))
        .collect();
    let prior = Calibration::IDENTITY.weights();
    let mut w = prior;
    let ridge = 1e-3;
    for _ in 0..100 {
        let mut grad = [0.0f64; N];
        let mut hess = [[0.0f64; N]; N];
        for i in 0..N {
            grad[i] = ridge * (w[i] - prior[i]);
            hess[i][i] = ridge;
        }
        for (x, y, sw) in &rows {
            let p = sigmoid((0..N).map(|i| w[i] * x[i]).sum());
            let v = sw * p * (1.0 - p);
            for i in 0..N {
                grad[i] += sw * (p - y) * x[i];
                for j in 0..N {
                    hess[i][j] += v * x[i] * x[j];
                }
            }
        }
        let Some(step) = solve(hess, grad) else {
            break;
        };
        // Damped Newton: halve the step until the penalised loss does not rise (a full step
        // diverges on near-saturated scores, e.g. a sigmoid probe's tail at logit −12).
        let objective = |w: &[f64; N]| -> f64 {
            let mut loss = 0.0;
            for (x, y, sw) in &rows {
                let z: f64 = (0..N).map(|i| w[i] * x[i]).sum();
                // log(1 + e^z) − y·z, stable.
                loss += sw * (z.max(0.0) + (-z.abs()).exp().ln_1p() - y * z);
            }
            loss + 0.5 * ridge * (0..N).map(|i| (w[i] - prior[i]).powi(2)).sum::<f64>()
        };
        let before = objective(&w);
        let mut t = 1.0;
        let mut next = w;
        for _ in 0..30 {
            for i in 0..N {
                next[i] = w[i] - t * step[i];
            }
            if objective(&next) <= before + 1e-12 {
                break;
            }
            t *= 0.5;
        }
        w = next;
        if step.iter().map(|s| (t * s).abs()).sum::<f64>() < 1e-9 {
            break;
        }
    }
    Calibration::from_weights(w)
}

/// Solves the N×N system `a·x = b` by Gaussian elimination with partial pivoting.
fn solve(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..N {
            let f = a[row][col] / pivot_row[col];
            for (x, p) in a[row].iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; N];
    for row in (0..N).rev() {
        let rest: f64 = (row + 1..N).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    Some(x)
}

/// Weighted mean log-loss of a calibration (for the fit's provenance).
pub fn log_loss(calibration: Calibration, samples: &[(Features, bool, f64)]) -> f64 {
    let (mut sum, mut total) = (0.0, 0.0);
    for (x, y, w) in samples {
        let p = (calibration.apply(x) as f64).clamp(1e-9, 1.0 - 1e-9);
        sum -= w * if *y { p.ln() } else { (1.0 - p).ln() };
        total += w;
    }
    sum / total.max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two clusters that differ in feature 0 (and a noisy feature 1 on another scale): the
    /// gate separates them, and its folded weights read raw features.
    #[test]
    fn the_gate_learns_a_separable_feature_and_reads_raw_vectors() {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..200 {
            let positive = i % 2 == 0;
            let noise = ((i * 37) % 11) as f32 / 11.0;
            x.push(vec![
                if positive { 5.0 } else { 3.0 } + noise * 0.5,
                1000.0 + noise * 100.0,
            ]);
            y.push(positive);
        }
        let w = vec![1.0; x.len()];
        let gate = fit_gate(&x, &y, &w, GateFit::default());
        let right = x
            .iter()
            .zip(&y)
            .filter(|(r, &t)| (gate.score(r) > 0.5) == t)
            .count();
        assert_eq!(right, x.len(), "{gate:?}");
        assert!(gate.score(&[5.5, 1050.0]) > 0.8);
        assert!(gate.score(&[3.0, 1050.0]) < 0.2);
        // Out of fold, every row is still scored and still separated.
        let oof = out_of_fold(&x, &y, &w, 5, GateFit::default());
        assert!(oof.iter().zip(&y).all(|(s, &t)| (*s > 0.5) == t));
    }

    #[test]
    fn an_uninformative_feature_gives_the_base_rate() {
        let x: Vec<Vec<f32>> = (0..100).map(|_| vec![1.0]).collect();
        let y: Vec<bool> = (0..100).map(|i| i % 4 == 0).collect();
        let gate = fit_gate(&x, &y, &vec![1.0; 100], GateFit::default());
        assert!((gate.score(&[1.0]) - 0.25).abs() < 0.01, "{gate:?}");
    }

    #[test]
    fn fit_recovers_a_known_calibration() {
        // Labels Bernoulli(truth(x)) over a grid of features, given in expectation as weights.
        let truth = Calibration {
            bias: -1.0,
            score: 2.0,
            concept_top: 0.5,
            decoder_top: -0.7,
            probe_top: 0.0,
            object_photo: 0.0,
        };
        let mut samples = Vec::new();
        for i in 1..20 {
            for j in 1..10 {
                for k in 1..10 {
                    let x = Features {
                        score: i as f32 / 20.0,
                        concept_top: j as f32 / 10.0,
                        decoder_top: k as f32 / 10.0,
                        probe_top: 0.0,
                        object_photo: 0.0,
                    };
                    let p = truth.apply(&x) as f64;
                    samples.push((x, true, p));
                    samples.push((x, false, 1.0 - p));
                }
            }
        }
        let fit = fit_calibration(&samples);
        for (got, want) in fit.weights().iter().zip(truth.weights()) {
            assert!((got - want).abs() < 0.02, "{fit:?}");
        }
        assert!(log_loss(fit, &samples) < log_loss(Calibration::IDENTITY, &samples));
    }
}
