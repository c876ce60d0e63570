//! Inverted dropout with masks from our own seeded RNG: candle's CPU RNG cannot be seeded, and
//! training runs must be reproducible.
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

use crate::Result;

/// Which side of a uniform draw u ∈ [0, 1) drops a unit. Both keep a unit with probability
/// 1 − p; they differ only in which draws do, so each trainer keeps the one its seeded runs were
/// made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropDraw {
    /// u < p drops (the story model).
    Below,
    /// u ≥ 1 − p drops (the hashtag decoders).
    Above,
}

/// A (rows, cols) mask of 0 and 1/(1 − p): multiplying by it drops each unit with probability
/// `p` and keeps the expectation.
pub fn dropout_mask(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    p: f32,
    draw: DropDraw,
    device: &Device,
) -> Result<Tensor> {
    let keep = 1.0 - p;
    let scale = 1.0 / keep;
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| {
            let u = rng.gen::<f32>();
            let dropped = match draw {
                DropDraw::Below => u < p,
                DropDraw::Above => u >= keep,
            };
            if dropped {
                0.0
            } else {
                scale
            }
        })
        .collect();
    Ok(Tensor::from_vec(v, (rows, cols), device)?)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// The masks the two trainers drew before they shared this function.
    #[test]
    fn masks_match_the_trainers_former_draws() {
        let (p, n) = (0.3f32, 257);
        let mut rng = StdRng::seed_from_u64(7);
        let story: Vec<f32> = (0..n)
            .map(|_| {
                if rng.gen::<f32>() < p {
                    0.0
                } else {
                    1.0 / (1.0 - p)
                }
            })
            .collect();
        let mut rng = StdRng::seed_from_u64(7);
        let keep = 1.0 - p;
        let tags: Vec<f32> = (0..n)
            .map(|_| {
                if rng.gen::<f32>() < keep {
                    1.0 / keep
                } else {
                    0.0
                }
            })
            .collect();
        for (draw, want) in [(DropDraw::Below, story), (DropDraw::Above, tags)] {
            let mut rng = StdRng::seed_from_u64(7);
            let got = dropout_mask(&mut rng, 1, n, p, draw, &Device::Cpu).unwrap();
            assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
        }
    }
}
