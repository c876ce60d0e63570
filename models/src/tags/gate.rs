//! The "does the ImageNet head know this photo?" gate of the fusion.
//!
//! Scores alone cannot tell a cup on a table (the ImageNet head names it) from people at a beach
//! (the head answers with a garment or a shore, and the caption words of the decoder and the
//! probe are right): both can give the head a confident top class. The pooled encoder vector
//! can. The gate is a logistic regression on it, P(the first concept hashtag is relevant), and
//! its logit is one more context term of every calibration (`fuse.rs`).
//!
//! It is fitted (hashtale-train's `tags::fusion_fit`) on dev sets by `hashtale tune fusion
//! --gate` (each set weighs the same), on
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
