use tokio_postgres::error::SqlState;

/// What callers of the store branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; `constraint` names which one.
    #[error("conflict on {constraint}")]
    Conflict { constraint: String },
    /// The database cannot be reached right now (engine restarting, pool
    /// exhausted, connection lost). Worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Config(String),
    /// A storage rule refused the change.
    #[error("storage: {0:?}")]
    Storage(crate::StorageRule),
    #[error("database error: {}", db_message(.0))]
    Db(#[source] tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            // Raised by the storage functions of migration 0007.
            match db.code().code() {
                "MDS02" => return StoreError::Storage(crate::StorageRule::BlobMissing),
                // An object written into a bucket deleted meanwhile.
                "23503" if db.constraint() == Some("storage_objects_bucket_id_fkey") => {
                    return StoreError::Storage(crate::StorageRule::NoSuchBucket)
                }
                _ => {}
            }
            if *db.code() == SqlState::UNIQUE_VIOLATION {
                return StoreError::Conflict {
                    constraint: db.constraint().unwrap_or_default().to_string(),
                };
            }
        }
        let transient = e.is_closed()
            || e.code().is_some_and(|c| {
                c.code().starts_with("08")
                    || *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CRASH_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW
                    || *c == SqlState::TOO_MANY_CONNECTIONS
            })
            || (e.code().is_none()
                && std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()));
        if transient {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Db(e)
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// The server's own words ("db error" alone says nothing).
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
