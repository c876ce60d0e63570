//! RMSProp as a candle [`Optimizer`] (candle-nn ships only SGD and AdamW), plus global-norm
//! gradient clipping.
//!
//! Update, per parameter p with gradient g (the Keras/PyTorch form):
//! `v ← ρ·v + (1−ρ)·g²`; without momentum `p ← p − lr·g / (√v + ε)`;
//! with momentum μ: `m ← μ·m + g / (√v + ε)`, `p ← p − lr·m`.
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

/// RMSProp settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RmsPropConfig {
    pub lr: f64,
    /// ρ, the decay of the running mean of squared gradients.
    pub decay: f64,
    pub eps: f64,
    /// μ; 0 turns momentum off.
    pub momentum: f64,
}

impl Default for RmsPropConfig {
    /// Keras's defaults with the seed's learning rate.
    fn default() -> Self {
        RmsPropConfig {
            lr: 0.01,
            decay: 0.9,
            eps: 1e-7,
            momentum: 0.0,
        }
    }
}

struct Slot {
    var: Var,
    sq: Tensor,
    mom: Option<Tensor>,
}

/// The RMSProp optimizer.
pub struct RmsProp {
    slots: Vec<Slot>,
    cfg: RmsPropConfig,
}

impl Optimizer for RmsProp {
    type Config = RmsPropConfig;

    fn new(vars: Vec<Var>, cfg: RmsPropConfig) -> candle_core::Result<Self> {
        let slots = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .map(|var| {
                let sq = var.zeros_like()?;
                let mom = if cfg.momentum != 0.0 {
                    Some(var.zeros_like()?)
                } else {
                    None
                };
                Ok(Slot { var, sq, mom })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(RmsProp { slots, cfg })
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        let c = self.cfg;
        for s in self.slots.iter_mut() {
            let Some(g) = grads.get(&s.var) else { continue };
            // Detached: the state must not chain each step's graph onto the next (a leak).
            let g = g.detach();
            s.sq = ((&s.sq * c.decay)? + (g.sqr()? * (1.0 - c.decay))?)?.detach();
            let scaled = g.div(&(s.sq.sqrt()? + c.eps)?)?;
            let delta = match &mut s.mom {
                Some(m) => {
                    *m = ((&*m * c.momentum)? + scaled)?.detach();
                    m.clone()
                }
                None => scaled,
            };
            s.var
                .set(&s.var.as_tensor().detach().sub(&(delta * c.lr)?)?)?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.cfg.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.cfg.lr = lr
    }
}

/// Scales the gradients of `vars` so their global L2 norm is at most `max_norm`; returns the norm
/// before clipping. Keeps an exploding step from undoing training.
pub fn clip_grad_norm(
    grads: &mut GradStore,
    vars: &[Var],
    max_norm: f64,
) -> candle_core::Result<f64> {
    let mut sum = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v) {
            sum += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = sum.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let k = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.remove(v) {
                grads.insert(v, (g * k)?);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn grads_for(var: &Var, coef: &[f32]) -> GradStore {
        // loss = Σ coef·p, so the gradient is coef.
        let c = Tensor::new(coef, &Device::Cpu).unwrap();
        var.as_tensor()
            .mul(&c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let v = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let mut g = grads_for(&v, &[3.0, 4.0]);
        let n = clip_grad_norm(&mut g, std::slice::from_ref(&v), 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        let c = g.get(&v).unwrap().to_vec1::<f32>().unwrap();
        assert!((c[0] - 0.6).abs() < 1e-5 && (c[1] - 0.8).abs() < 1e-5);
    }

    #[test]
    fn learning_rate_is_settable() {
        let v = Var::new(&[1f32], &Device::Cpu).unwrap();
        let mut o = RmsProp::new(vec![v], RmsPropConfig::default()).unwrap();
        o.set_learning_rate(0.5);
        assert_eq!(o.learning_rate(), 0.5);
    }

    fn close(a: &[f32], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((*x as f64 - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn rmsprop_matches_hand_computed_steps() {
        let v = Var::new(&[1f32, -2.0], &Device::Cpu).unwrap();
        let cfg = RmsPropConfig {
            lr: 0.01,
            decay: 0.9,
            eps: 1e-7,
            momentum: 0.0,
        };
        let mut opt = RmsProp::new(vec![v.clone()], cfg).unwrap();
        // Step 1, g = (0.5, -4): v = 0.1·g² = (0.025, 1.6); p -= 0.01·g/(√v + 1e-7).
        opt.step(&grads_for(&v, &[0.5, -4.0])).unwrap();
        let s1 = [0.025f64, 1.6];
        let p1 = [
            1.0 - 0.01 * 0.5 / (s1[0].sqrt() + 1e-7),
            -2.0 + 0.01 * 4.0 / (s1[1].sqrt() + 1e-7),
        ];
        close(&v.to_vec1::<f32>().unwrap(), &p1);
        // Step 2, g = (1, 1): v = 0.9·v + 0.1.
        opt.step(&grads_for(&v, &[1.0, 1.0])).unwrap();
        let s2 = [0.9 * s1[0] + 0.1, 0.9 * s1[1] + 0.1];
        let p2 = [
            p1[0] - 0.01 / (s2[0].sqrt() + 1e-7),
            p1[1] - 0.01 / (s2[1].sqrt() + 1e-7),
        ];
        close(&v.to_vec1::<f32>().unwrap(), &p2);
    }

    #[test]
    fn rmsprop_momentum_matches_hand_computed_steps() {
        let v = Var::new(&[0f32], &Device::Cpu).unwrap();
        let cfg = RmsPropConfig {
            lr: 0.1,
            decay: 0.5,
            eps: 0.0,
            momentum: 0.9,
        };
        let mut opt = RmsProp::new(vec![v.clone()], cfg).unwrap();
        opt.step(&grads_for(&v, &[2.0])).unwrap();
        // v = 0.5·4 = 2; m = 2/√2 = √2; p = −0.1·√2.
        let m1 = 2f64 / 2f64.sqrt();
        close(&v.to_vec1::<f32>().unwrap(), &[-0.1 * m1]);
        opt.step(&grads_for(&v, &[2.0])).unwrap();
        // v = 0.5·2 + 0.5·4 = 3; m = 0.9·√2 + 2/√3.
        let m2 = 0.9 * m1 + 2.0 / 3f64.sqrt();
        close(&v.to_vec1::<f32>().unwrap(), &[-0.1 * m1 - 0.1 * m2]);
    }
}
