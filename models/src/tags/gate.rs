//! The "does the ImageNet head know this photo?" gate of the fusion.
//!
//! Scores alone cannot tell a cup on a table (the ImageNet head names it) from people at a beach
//! (the head answers with a garment or a shore, and the caption words of the decoder and the
//! probe are right): both can give the head a confident top class. The pooled encoder vector
//! can. The gate is a logistic regression on it, P(the first concept hashtag is relevant), and
//! its logit is one more context term of every calibration (`fuse.rs`).
//!
//! It is fitted on dev sets by `hashtale tune fusion --gate` (each set weighs the same), on
//! standardised features with an L2 penalty, by Nesterov's accelerated gradient; the
//! standardisation is folded into the stored weights, which read the raw pooled vector. The
//! calibrations are fitted on out-of-fold gate scores, so they see the gate as it behaves on
//! photos it was not fitted on.
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A logistic regression on the pooled encoder vector.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhotoGate {
    pub bias: f32,
    /// One weight per pooled feature (1280 for EfficientNet-Lite).
    pub weights: Vec<f32>,
}

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

impl PhotoGate {
    /// P(the ImageNet head's first hashtag is relevant) of one pooled vector.
    pub fn score(&self, pooled: &[f32]) -> f32 {
        let z: f32 = self.bias
            + self
                .weights
                .iter()
                .zip(pooled)
                .map(|(w, x)| w * x)
                .sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }

    /// The gate of every row of a (B, D) pooled tensor.
    pub fn scores(&self, pooled: &Tensor) -> Result<Vec<f32>> {
        let rows = pooled.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        if let Some(r) = rows.first() {
            if r.len() != self.weights.len() {
                return Err(crate::error::Error::msg(format!(
                    "the fusion gate reads {} features, the encoder gives {}",
                    self.weights.len(),
                    r.len()
                )));
            }
        }
        Ok(rows.iter().map(|r| self.score(r)).collect())
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
}
