//! Proportions with Wilson score intervals, and the majority rule used to aggregate raters.
use serde::{Deserialize, Serialize};

/// The standard normal quantile for a two-sided 95% interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// A share `successes / n` with its Wilson score interval `[low, high]`.
///
/// With `n = 0` nothing is known: `value` is 0 and the interval is the whole `[0, 1]`; renderers
/// check `n` before printing a percentage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Proportion {
    pub successes: u64,
    pub n: u64,
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Proportion {
    /// 95% Wilson interval.
    pub fn new(successes: u64, n: u64) -> Proportion {
        wilson(successes, n, Z_95)
    }

    /// Whether there is any observation behind the share.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Wilson score interval for `successes` of `n` at normal quantile `z` (1.96 for 95%):
///
/// `(p̂ + z²/2n ± z·√(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n)`, with `p̂ = successes / n`.
///
/// Unlike the normal-approximation (Wald) interval it stays inside [0, 1] and keeps a sensible
/// width at 0% and 100%, which matters with the small samples of human ratings.
///
/// # Panics
/// If `successes > n`, or `z` is not a finite non-negative number: both are programming errors.
pub fn wilson(successes: u64, n: u64, z: f64) -> Proportion {
    assert!(successes <= n, "wilson: {successes} successes of {n}");
    assert!(z.is_finite() && z >= 0.0, "wilson: z = {z}");
    if n == 0 {
        return Proportion {
            successes,
            n,
            value: 0.0,
            low: 0.0,
            high: 1.0,
        };
    }
    let nf = n as f64;
    let p = successes as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    Proportion {
        successes,
        n,
        value: p,
        // At p̂ = 0 (or 1) the bound is exactly 0 (or 1); rounding would leave 1e-17 or 0.9999….
        low: if successes == 0 {
            0.0
        } else {
            (centre - half).clamp(0.0, 1.0)
        },
        high: if successes == n {
            1.0
        } else {
            (centre + half).clamp(0.0, 1.0)
        },
    }
}

/// "More than half": the seed's rule for aggregating raters (a tie is not a majority).
pub fn majority(yes: usize, n: usize) -> bool {
    2 * yes > n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() < eps
    }

    #[test]
    fn wilson_known_value() {
        // 81 of 263: p̂ = 0.30798, z² = 3.84146, 1 + z²/n = 1.014606,
        // centre = (0.30798 + 0.0073031)/1.014606 = 0.310749,
        // half = 1.959964·√(0.30798·0.69202/263 + 3.84146/276676)/1.014606
        //      = 1.959964·√(0.00081039 + 0.00001388)/1.014606 = 0.055460,
        // so [0.2553, 0.3662], the figure also given by online Wilson calculators.
        let p = Proportion::new(81, 263);
        assert!(close(p.value, 81.0 / 263.0, 1e-12));
        assert!(close(p.low, 0.2553, 5e-5), "low = {}", p.low);
        assert!(close(p.high, 0.3662, 5e-5), "high = {}", p.high);
        assert_eq!((p.successes, p.n), (81, 263));
    }

    #[test]
    fn wilson_at_the_edges() {
        // 0 of 10: low = 0 and high = z²/(n + z²) = 3.84146/13.84146 = 0.27753.
        let p = Proportion::new(0, 10);
        assert_eq!(p.low, 0.0);
        assert!(close(p.high, Z_95 * Z_95 / (10.0 + Z_95 * Z_95), 1e-12));
        assert!(close(p.high, 0.27753, 1e-5));
        // 10 of 10 mirrors it.
        let q = Proportion::new(10, 10);
        assert!(close(q.low, 1.0 - p.high, 1e-12));
        assert_eq!(q.high, 1.0);
        // 1/2 is centred.
        let h = Proportion::new(50, 100);
        assert!(close(h.low + h.high, 1.0, 1e-12));
        assert!(h.low > 0.40 && h.low < 0.41, "{}", h.low);
        // Nothing known.
        let e = Proportion::new(0, 0);
        assert!(e.is_empty());
        assert_eq!((e.low, e.high), (0.0, 1.0));
    }

    #[test]
    fn wilson_z_widens_the_interval() {
        let narrow = wilson(30, 100, 1.0);
        let wide = wilson(30, 100, 2.576);
        assert!(wide.low < narrow.low && wide.high > narrow.high);
        // z = 0 collapses to the point estimate.
        let point = wilson(30, 100, 0.0);
        assert!(close(point.low, 0.3, 1e-12) && close(point.high, 0.3, 1e-12));
    }

    #[test]
    fn majority_is_more_than_half() {
        assert!(majority(2, 3));
        assert!(!majority(1, 2));
        assert!(majority(2, 2));
        assert!(!majority(2, 4));
        assert!(majority(3, 4));
        assert!(!majority(0, 0));
        assert!(majority(1, 1));
    }
}
