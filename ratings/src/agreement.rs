//! Inter-rater agreement: Fleiss' κ (nominal, many raters) and Krippendorff's α (any metric, missing
//! values allowed).
//!
//! Both return `None` where the coefficient is undefined rather than a made-up number, so a report
//! can print "n/a" instead of a misleading 0 or 1.
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// One agreement figure and the data behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// κ or α: 1 = perfect agreement, 0 = what chance would give, below 0 = systematic disagreement.
    pub value: f64,
    /// Items (Fleiss) or units (Krippendorff) that entered the computation, i.e. those with at
    /// least two ratings.
    pub items: usize,
    /// Raters behind the figure. Krippendorff: coders with at least one pairable rating. Fleiss from
    /// a bare count table: the largest number of ratings of one item (a lower bound, since the table
    /// does not say who rated); [`crate::report`] replaces it with the exact count of distinct raters.
    pub raters: usize,
    /// Ratings that entered the computation (pairable values).
    pub ratings: usize,
}

/// Fleiss' κ for a table with one row per item and one column per category, each cell the number of
/// raters who put that item in that category.
///
/// The number of ratings per item may vary; items with fewer than two ratings are dropped (they
/// carry no information on agreement). With `n_i` ratings of item `i`, `n_ij` of them in category
/// `j`, and `N` kept items:
///
/// * `P_i = (Σ_j n_ij² − n_i) / (n_i (n_i − 1))`: the share of agreeing ordered rater pairs on item i;
/// * `P̄ = (1/N) Σ_i P_i`;
/// * `p_j = Σ_i n_ij / Σ_i n_i`: the share of all ratings in category j;
/// * `P_e = Σ_j p_j²`;
/// * `κ = (P̄ − P_e) / (1 − P_e)`.
///
/// With a constant number of ratings per item this is exactly Fleiss (1971). Returns `None` with
/// fewer than two kept items, or when every rating falls in one category (`P_e = 1`: κ is 0/0).
pub fn fleiss_kappa(table: &[Vec<usize>]) -> Option<Agreement> {
    let kept: Vec<&Vec<usize>> = table
        .iter()
        .filter(|row| row.iter().sum::<usize>() >= 2)
        .collect();
    if kept.len() < 2 {
        return None;
    }
    let categories = kept.iter().map(|row| row.len()).max().unwrap_or(0);
    let mut per_category = vec![0usize; categories];
    let mut total = 0usize;
    let mut max_raters = 0usize;
    let mut p_sum = 0.0;
    for row in &kept {
        let n_i: usize = row.iter().sum();
        let squares: usize = row.iter().map(|&c| c * c).sum();
        p_sum += (squares - n_i) as f64 / (n_i * (n_i - 1)) as f64;
        for (j, &c) in row.iter().enumerate() {
            per_category[j] += c;
        }
        total += n_i;
        max_raters = max_raters.max(n_i);
    }
    let p_bar = p_sum / kept.len() as f64;
    let p_e: f64 = per_category
        .iter()
        .map(|&c| {
            let p = c as f64 / total as f64;
            p * p
        })
        .sum();
    // P_e reaches 1 only when all ratings share one category; allow for rounding.
    if 1.0 - p_e < 1e-12 {
        return None;
    }
    Some(Agreement {
        value: (p_bar - p_e) / (1.0 - p_e),
        items: kept.len(),
        raters: max_raters,
        ratings: total,
    })
}

/// Level of measurement of the values, which sets Krippendorff's difference function δ².
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// δ²(c, k) = 0 if c = k, else 1.
    Nominal,
    /// δ²(c, k) = (Σ_{g=c..k} n_g − (n_c + n_k)/2)², with n_g the number of pairable values equal
    /// to g: distance by how many values lie between, so only the order of the values matters.
    Ordinal,
    /// δ²(c, k) = (c − k)².
    Interval,
}

/// Krippendorff's α for reliability data given as `units[u][coder]` (`None` = that coder did not
/// rate that unit; rows may differ in length, missing trailing coders count as `None`).
///
/// Computed through the coincidence matrix: every unit with `m_u ≥ 2` values contributes
/// `1 / (m_u − 1)` to `o[c][k]` for each ordered pair of its values (c from one coder, k from
/// another). With `n_c = Σ_k o[c][k]` and `n = Σ_c n_c` (the pairable values):
///
/// `α = 1 − (n − 1) · Σ_{c,k} o[c][k] δ²(c,k) / Σ_{c,k} n_c n_k δ²(c,k)`.
///
/// Returns `None` with fewer than two units that have two or more values, or when the pairable
/// values show no variation at all (all equal): then the expected disagreement is 0 and α is 0/0.
/// Krippendorff reads the latter as "the data cannot tell", not as perfect reliability.
pub fn krippendorff_alpha(units: &[Vec<Option<u32>>], metric: Metric) -> Option<Agreement> {
    let pairable: Vec<(Vec<u32>, Vec<usize>)> = units
        .iter()
        .filter_map(|unit| {
            let (values, coders): (Vec<u32>, Vec<usize>) = unit
                .iter()
                .enumerate()
                .filter_map(|(coder, v)| v.map(|v| (v, coder)))
                .unzip();
            (values.len() >= 2).then_some((values, coders))
        })
        .collect();
    if pairable.len() < 2 {
        return None;
    }
    let values: Vec<u32> = pairable
        .iter()
        .flat_map(|(vs, _)| vs.iter().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index = |v: u32| values.binary_search(&v).expect("value collected above");
    let size = values.len();

    let mut o = vec![vec![0.0f64; size]; size];
    for (vs, _) in &pairable {
        let weight = 1.0 / (vs.len() - 1) as f64;
        for (a, &va) in vs.iter().enumerate() {
            for (b, &vb) in vs.iter().enumerate() {
                if a != b {
                    o[index(va)][index(vb)] += weight;
                }
            }
        }
    }
    let n_c: Vec<f64> = o.iter().map(|row| row.iter().sum()).collect();
    let n: f64 = n_c.iter().sum();

    let delta2 = |c: usize, k: usize| -> f64 {
        match metric {
            Metric::Nominal => f64::from(u8::from(c != k)),
            Metric::Ordinal => {
                let (lo, hi) = (c.min(k), c.max(k));
                let between: f64 = n_c[lo..=hi].iter().sum();
                let d = between - (n_c[lo] + n_c[hi]) / 2.0;
                d * d
            }
            Metric::Interval => {
                let d = f64::from(values[c]) - f64::from(values[k]);
                d * d
            }
        }
    };
    let mut observed = 0.0;
    let mut expected = 0.0;
    for c in 0..size {
        for k in 0..size {
            let d = delta2(c, k);
            observed += o[c][k] * d;
            expected += n_c[c] * n_c[k] * d;
        }
    }
    if expected <= 0.0 {
        return None;
    }
    let raters = pairable
        .iter()
        .flat_map(|(_, coders)| coders.iter().copied())
        .collect::<BTreeSet<_>>()
        .len();
    Some(Agreement {
        value: 1.0 - (n - 1.0) * observed / expected,
        items: pairable.len(),
        raters,
        ratings: pairable.iter().map(|(vs, _)| vs.len()).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fleiss (1971) data as tabulated in Wikipedia's "Fleiss' kappa" worked example: 10 subjects,
    /// 14 raters each, 5 categories. Published: P̄ = 0.378, P_e = 0.213, κ = 0.210.
    fn fleiss_1971() -> Vec<Vec<usize>> {
        vec![
            vec![0, 0, 0, 0, 14],
            vec![0, 2, 6, 4, 2],
            vec![0, 0, 3, 5, 6],
            vec![0, 3, 9, 2, 0],
            vec![2, 2, 8, 1, 1],
            vec![7, 7, 0, 0, 0],
            vec![3, 2, 6, 3, 0],
            vec![2, 5, 3, 2, 2],
            vec![6, 5, 2, 1, 0],
            vec![0, 2, 2, 3, 7],
        ]
    }

    #[test]
    fn fleiss_matches_the_published_worked_example() {
        let a = fleiss_kappa(&fleiss_1971()).unwrap();
        assert!((a.value - 0.210).abs() < 0.0005, "kappa = {}", a.value);
        assert_eq!((a.items, a.raters, a.ratings), (10, 14, 140));
    }

    #[test]
    fn fleiss_drops_items_with_fewer_than_two_ratings() {
        let mut table = fleiss_1971();
        table.push(vec![1, 0, 0, 0, 0]);
        table.push(vec![0, 0, 0, 0, 0]);
        let a = fleiss_kappa(&table).unwrap();
        assert!((a.value - 0.210).abs() < 0.0005);
        assert_eq!(a.items, 10);
    }

    #[test]
    fn fleiss_with_varying_raters_per_item() {
        // Hand computation. Items: [2,0] P=1, [1,1] P=0, [0,3] P=1, [2,1] P=(5-3)/6=1/3.
        // P̄ = (1 + 0 + 1 + 1/3)/4 = 7/12. Ratings: 5 in category 0, 5 in category 1 of 10,
        // P_e = 0.5. κ = (7/12 - 1/2)/(1/2) = 1/6.
        let a = fleiss_kappa(&[vec![2, 0], vec![1, 1], vec![0, 3], vec![2, 1]]).unwrap();
        assert!((a.value - 1.0 / 6.0).abs() < 1e-12, "kappa = {}", a.value);
        assert_eq!((a.items, a.raters, a.ratings), (4, 3, 10));
    }

    #[test]
    fn fleiss_edge_cases() {
        // Perfect agreement across two categories.
        let a = fleiss_kappa(&[vec![3, 0], vec![0, 3], vec![3, 0]]).unwrap();
        assert!((a.value - 1.0).abs() < 1e-12);
        // Everybody always says the same thing: undefined.
        assert!(fleiss_kappa(&[vec![3, 0], vec![2, 0]]).is_none());
        // Fewer than two items.
        assert!(fleiss_kappa(&[vec![2, 1]]).is_none());
        assert!(fleiss_kappa(&[]).is_none());
        // Maximal disagreement on pairs of raters is worse than chance.
        let a = fleiss_kappa(&[vec![1, 1], vec![1, 1]]).unwrap();
        assert!((a.value + 1.0).abs() < 1e-12, "kappa = {}", a.value);
    }

    /// Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers
    /// (A-D) × 12 units with missing values. Rows here are units, columns observers A, B, C, D.
    /// Published: nominal α = 0.743, ordinal α = 0.815, interval α = 0.849.
    fn krippendorff_2011() -> Vec<Vec<Option<u32>>> {
        // One line per observer, units 1..12 left to right, "." = missing.
        let observers = [
            "1 2 3 3 2 1 4 1 2 . . .",
            "1 2 3 3 2 2 4 1 2 5 . 3",
            ". 3 3 3 2 3 4 2 2 5 1 .",
            "1 2 3 3 2 4 4 1 2 5 1 .",
        ]
        .map(|line| {
            line.split_whitespace()
                .map(|v| v.parse::<u32>().ok())
                .collect::<Vec<_>>()
        });
        (0..12)
            .map(|u| observers.iter().map(|o| o[u]).collect())
            .collect()
    }

    #[test]
    fn krippendorff_matches_the_published_example() {
        let data = krippendorff_2011();
        for (metric, published) in [
            (Metric::Nominal, 0.743),
            (Metric::Ordinal, 0.815),
            (Metric::Interval, 0.849),
        ] {
            let a = krippendorff_alpha(&data, metric).unwrap();
            assert!(
                (a.value - published).abs() < 0.0005,
                "{metric:?}: alpha = {}",
                a.value
            );
            // Unit 12 has a single value and is not pairable: 11 units, 40 values, 4 observers.
            assert_eq!((a.items, a.raters, a.ratings), (11, 4, 40), "{metric:?}");
        }
    }

    #[test]
    fn krippendorff_nominal_as_exact_fractions() {
        // The paper's nominal α by hand: pairable values per value 1..5 are n_c = 9, 13, 10, 5, 3
        // (n = 40). Disagreeing coincidences: unit 2 (2,2,3,2) gives 6 ordered pairs × 1/3 = 2,
        // unit 6 (1,2,3,4) 12 × 1/3 = 4, unit 8 (1,1,2,1) 6 × 1/3 = 2: Σ o δ² = 8.
        // Σ n_c n_k δ² = 40² − (81 + 169 + 100 + 25 + 9) = 1216. α = 1 − 39·8/1216 = 904/1216.
        let a = krippendorff_alpha(&krippendorff_2011(), Metric::Nominal).unwrap();
        assert!(
            (a.value - 904.0 / 1216.0).abs() < 1e-12,
            "alpha = {}",
            a.value
        );

        // Two coders, units (1,1), (1,2), (2,2): o11 = o22 = 2, o12 = o21 = 1, n1 = n2 = 3, n = 6.
        // α = 1 − 5 · 2 / (2·3·3) = 4/9.
        let data = vec![
            vec![Some(1), Some(1)],
            vec![Some(1), Some(2)],
            vec![Some(2), Some(2)],
        ];
        let a = krippendorff_alpha(&data, Metric::Nominal).unwrap();
        assert!((a.value - 4.0 / 9.0).abs() < 1e-12, "alpha = {}", a.value);
        // With only two values every metric has a single non-zero distance (ordinal: (6 − 3)² = 9,
        // interval: 1), which scales observed and expected disagreement alike: α is unchanged.
        for metric in [Metric::Ordinal, Metric::Interval] {
            let b = krippendorff_alpha(&data, metric).unwrap();
            assert!((b.value - a.value).abs() < 1e-12, "{metric:?}");
        }
    }

    #[test]
    fn krippendorff_edge_cases() {
        // Perfect agreement with variation: α = 1.
        let perfect = vec![
            vec![Some(0), Some(0), None],
            vec![Some(2), Some(2), Some(2)],
            vec![Some(1), None, Some(1)],
        ];
        for metric in [Metric::Nominal, Metric::Ordinal, Metric::Interval] {
            let a = krippendorff_alpha(&perfect, metric).unwrap();
            assert!((a.value - 1.0).abs() < 1e-12, "{metric:?}");
            assert_eq!((a.items, a.raters, a.ratings), (3, 3, 7));
        }
        // No variation: undefined.
        let flat = vec![vec![Some(1), Some(1)], vec![Some(1), Some(1), Some(1)]];
        assert!(krippendorff_alpha(&flat, Metric::Ordinal).is_none());
        // Fewer than two pairable units.
        let one = vec![vec![Some(0), Some(2)], vec![Some(1)], vec![None, None]];
        assert!(krippendorff_alpha(&one, Metric::Nominal).is_none());
        assert!(krippendorff_alpha(&[], Metric::Nominal).is_none());
    }

    #[test]
    fn ordinal_differs_from_interval_when_values_are_unevenly_used() {
        // The ordinal metric depends on how often values are used, not their numeric gaps:
        // relabelling 1,2,3 as 1,2,30 changes interval α but not ordinal α.
        let base = vec![
            vec![Some(1), Some(2)],
            vec![Some(2), Some(2)],
            vec![Some(3), Some(2)],
            vec![Some(1), Some(1)],
            vec![Some(3), Some(3)],
        ];
        let stretched: Vec<Vec<Option<u32>>> = base
            .iter()
            .map(|u| {
                u.iter()
                    .map(|v| v.map(|v| if v == 3 { 30 } else { v }))
                    .collect()
            })
            .collect();
        let ord = |d: &[Vec<Option<u32>>]| krippendorff_alpha(d, Metric::Ordinal).unwrap().value;
        let int = |d: &[Vec<Option<u32>>]| krippendorff_alpha(d, Metric::Interval).unwrap().value;
        assert!((ord(&base) - ord(&stretched)).abs() < 1e-12);
        assert!((int(&base) - int(&stretched)).abs() > 1e-3);
    }
}
