//! exp, tanh and the logistic sigmoid as branch-free polynomials the compiler vectorises.
//!
//! libm's `expf`/`tanhf` are one call per element; in the story engine's gate pass and in beam
//! search's attention they were a quarter of the arithmetic. These agree with the exact
//! functions to about 1e-7 (tests below), the size of f32 rounding itself, so sampled stories
//! and ranked hashtags come out the same in all but rare ties.

/// e^y: y = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two so n·ln2 is exact), e^r by its Taylor
/// series to r⁷ (relative error under 1e-8 there), then 2^n through the exponent bits. y is
/// clamped to [−87, 88], where e^y stays a normal f32.
#[inline(always)]
pub fn exp(y: f32) -> f32 {
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let y = y.clamp(-87.0, 88.0);
    let shifted = y * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let poly = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    // 2^n from the integer in `shifted`'s low mantissa bits (its bits are ROUND's plus n):
    // integer arithmetic that vectorises, where `n as i32` (a saturating conversion) did not.
    let biased = shifted
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    poly * f32::from_bits(biased << 23)
}

/// tanh x = (e^{2x} − 1) / (e^{2x} + 1), with |2x| clamped at 18, past which tanh is ±1 in f32.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = exp((2.0 * x).clamp(-18.0, 18.0));
    (e - 1.0) / (e + 1.0)
}

/// σ(x) = 1 / (1 + e^{−x}).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Softmax of `x · scale` in place (`scale` > 0: a sampler's 1/temperature), as candle's
/// `softmax_last_dim` computes it (e^(v − max) over the sum) but in 16 lanes at once: the max
/// and the sum in 16 partial results, e^ by [`exp`]. An id of −∞ (a banned piece) gets exactly
/// 0. The probabilities agree with the one-lane, libm form to about 1e-7 relative, so a draw
/// differs only where its uniform falls that close to a boundary. Compiled for AVX-512 and AVX2
/// too, and picked at run time, as a subword row's 2,048 ids made it a sixth of a story step.
pub fn softmax_scaled(x: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, the one feature the function is compiled for.
            return unsafe { softmax_avx512(x, scale) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { softmax_avx2(x, scale) };
        }
    }
    softmax_lanes(x, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_avx512(x: &mut [f32], scale: f32) {
    softmax_lanes(x, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_avx2(x: &mut [f32], scale: f32) {
    softmax_lanes(x, scale)
}

#[inline(always)]
fn softmax_lanes(x: &mut [f32], scale: f32) {
    const LANES: usize = 16;
    let mut lane_max = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (m, v) in lane_max.iter_mut().zip(c.iter_mut()) {
            *v *= scale;
            *m = m.max(*v);
        }
    }
    let mut max = lane_max.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in chunks.into_remainder() {
        *v *= scale;
        max = max.max(*v);
    }
    let e = |v: f32| {
        if v == f32::NEG_INFINITY {
            0.0
        } else {
            exp(v - max)
        }
    };
    let mut lane_sum = [0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, v) in lane_sum.iter_mut().zip(c.iter_mut()) {
            *v = e(*v);
            *s += *v;
        }
    }
    let mut sum: f32 = lane_sum.iter().sum();
    for v in chunks.into_remainder() {
        *v = e(*v);
        sum += *v;
    }
    x.iter_mut().for_each(|v| *v /= sum);
}

#[cfg(test)]
mod tests {
    /// The worst error every 1e-4 over [−range, range], and at a few far values (those beyond
    /// `range` only for absolute errors).
    fn worst(
        f: impl Fn(f32) -> f32,
        exact: impl Fn(f64) -> f64,
        range: f32,
        relative: bool,
    ) -> f64 {
        let steps = (range * 1e4) as i32;
        let far = [-1e4f32, -100.0, -50.0, 50.0, 100.0, 1e4, 1e-30, -1e-30, 0.0];
        (-steps..=steps)
            .map(|k| k as f32 * 1e-4)
            .chain(far.into_iter().filter(|x| x.abs() <= range || !relative))
            .map(|x| {
                let (got, want) = (f(x) as f64, exact(x as f64));
                let err = (got - want).abs();
                if relative {
                    err / want.abs()
                } else {
                    err
                }
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn exp_is_within_3e7_relative() {
        let e = worst(super::exp, f64::exp, 87.0, true);
        assert!(e < 3e-7, "worst relative error {e}");
    }

    #[test]
    fn tanh_and_sigmoid_are_within_2e7() {
        let t = worst(super::tanh, f64::tanh, 20.0, false);
        assert!(t < 2e-7, "tanh: worst error {t}");
        let s = worst(super::sigmoid, |x| 1.0 / (1.0 + (-x).exp()), 20.0, false);
        assert!(s < 2e-7, "sigmoid: worst error {s}");
    }

    #[test]
    fn softmax_agrees_with_the_libm_form() {
        let row: Vec<f32> = (0..2051)
            .map(|i| match i % 97 {
                0 => f32::NEG_INFINITY,
                _ => ((i * 7919) % 2000) as f32 / 100.0 - 12.0,
            })
            .collect();
        for scale in [1.0f32, 1.25, 2.0] {
            let mut ours = row.clone();
            super::softmax_scaled(&mut ours, scale);
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
            let exact: Vec<f64> = row
                .iter()
                .map(|&v| ((v * scale - max) as f64).exp())
                .collect();
            let total: f64 = exact.iter().sum();
            for (i, (&got, want)) in ours.iter().zip(&exact).enumerate() {
                let want = want / total;
                if row[i] == f32::NEG_INFINITY {
                    assert_eq!(got, 0.0, "id {i}");
                } else {
                    assert!(
                        ((got as f64 - want) / want).abs() < 1e-6,
                        "id {i}: {got} vs {want}"
                    );
                }
            }
        }
        // Every id banned: no distribution (NaN), as candle's softmax gives.
        let mut banned = [f32::NEG_INFINITY; 5];
        super::softmax_scaled(&mut banned, 1.0);
        assert!(banned.iter().all(|v| v.is_nan()));
    }
}
