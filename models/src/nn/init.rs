//! Seeded weight initialisation: candle's CPU RNG cannot be seeded, so trainers overwrite every
//! variable from their own RNG, in name order (a `VarMap`'s own order changes from run to run).
use candle_core::Tensor;
use candle_nn::VarMap;

use crate::{Error, Result};

/// Sets every variable of `varmap` to `values(name, dims)`, visiting names in sorted order so a
/// seeded RNG inside `values` gives the same weights on every run.
pub fn reinit_in_name_order(
    varmap: &VarMap,
    mut values: impl FnMut(&str, &[usize]) -> Vec<f32>,
) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::msg("varmap lock poisoned"))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let v = values(name, &dims);
        var.set(&Tensor::from_vec(v, dims, var.device())?)?;
    }
    Ok(())
}
