//! What hashtale's pipeline crates share: configuration, messages, the store (Postgres or
//! SQLite), the job queues (RabbitMQ or in-process), safe image fetching and metrics.
pub mod config;
pub mod error;
pub mod fetch;
pub mod metrics;
pub mod queue;
pub mod ratings_store;
pub mod store;
pub mod types;

pub use config::Config;
pub use error::{Error, Result};
pub use store::Store;
