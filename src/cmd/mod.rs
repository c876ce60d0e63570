//! One module per subcommand.
pub mod backfill;
pub mod bench;
pub mod classify;
pub mod config;
pub mod dataset;
pub mod eval_tags;
pub mod hashtags;
pub mod migrate;
pub mod models;
pub mod ratings;
pub mod run;
pub mod scheduler;
pub mod serve;
pub mod story;
pub mod tag;
pub mod train_tags;
pub mod worker;
