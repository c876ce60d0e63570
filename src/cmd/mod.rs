//! One module per subcommand.
pub mod classify;
pub mod eval_tags;
pub mod hashtags;
pub mod story;
pub mod tag;
pub mod train_tags;
