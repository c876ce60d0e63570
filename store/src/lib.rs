//! hashtale's store: one interface over Postgres (production) and SQLite (embedded).
//!
//! - [`db`]: [`Store`], its connection, migrations and the rows of posts, jobs and results.
//! - [`ratings`]: raters, assignments and answers of the ratings page, and the rows reports read.
pub mod db;
pub mod ratings;

pub use db::*;
