//! The one error type of the pipeline's library crates.
use thiserror::Error;

/// What can go wrong in the store, the queues, fetching or configuration.
#[derive(Debug, Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The input image is unusable (bad URL, refused address, too large, not an image, …);
    /// retrying will not help, so the job fails at once.
    #[error("{0}")]
    BadInput(String),
    /// A transient failure (network, server error); the job is retried.
    #[error("{0}")]
    Transient(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Other(String),
}

impl From<hashtale_fetch::DecodeError> for Error {
    /// A refused or undecodable image is final: the same bytes fail the same way.
    fn from(e: hashtale_fetch::DecodeError) -> Self {
        Error::BadInput(e.to_string())
    }
}

impl Error {
    /// Whether retrying the same job could succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Error::BadInput(_) | Error::NotFound(_))
    }
}

/// Result with the pipeline's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
