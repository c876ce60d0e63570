//! What the training tests share: the repository's shipped assets.
#![allow(dead_code)] // each test binary uses its own part

use std::path::PathBuf;

use hashtale_models::ModelPaths;

/// The repository's `assets/` folder.
pub fn assets() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets"))
}

/// The shipped models' paths.
pub fn shipped() -> ModelPaths {
    ModelPaths::shipped(&assets())
}
