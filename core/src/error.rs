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
    /// The input is not in a format we take (an upload that is not an image by its magic
    /// bytes); final, like [`Error::BadInput`].
    #[error("{0}")]
    Unsupported(String),
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

impl From<hashtale_fetch::FetchError> for Error {
    fn from(e: hashtale_fetch::FetchError) -> Self {
        use hashtale_fetch::FetchError;
        match e {
            FetchError::Config(m) => Error::Config(m),
            FetchError::BadInput(m) => Error::BadInput(m),
            FetchError::Transient(m) => Error::Transient(m),
        }
    }
}

impl Error {
    /// Whether retrying the same job could succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            Error::BadInput(_) | Error::Unsupported(_) | Error::NotFound(_)
        )
    }

    /// Whether the error says the database or the broker cannot be reached right now (a
    /// restart, a network cut), rather than that the request or the code is wrong.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Db(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) => {
                true
            }
            // SQLSTATE classes 08 (connection exception) and 57 (operator intervention: the
            // server is shutting down or starting up).
            Error::Db(sqlx::Error::Database(d)) => d
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
            Error::Amqp(_) => true,
            _ => false,
        }
    }
}

/// Result with the pipeline's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn lost_connections_are_unavailable_not_bugs() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(Error::Db(sqlx::Error::Io(io)).is_unavailable());
        assert!(Error::Db(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(!Error::Db(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!Error::BadInput("x".into()).is_unavailable());
        assert!(!Error::Other("x".into()).is_unavailable());
    }
}
