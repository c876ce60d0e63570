//! Layers the models share.
//!
//! - [`lstm`]: the one LSTM cell, with a loader per checkpoint layout.
//! - [`dropout`]: inverted-dropout masks from a seeded RNG.
//! - [`init`]: seeded re-initialisation of a `VarMap`, variable by variable in name order.
pub mod dropout;
pub mod init;
pub mod lstm;

pub use lstm::LstmCell;
