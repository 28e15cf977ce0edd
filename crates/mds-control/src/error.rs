//! What a domain operation can refuse or fail with. The server maps each
//! variant to an HTTP status and MIOSA code in one place
//! (`mds-server/src/error.rs`); nothing here knows HTTP.

use mds_core::FieldError;
use mds_provision::ProvisionError;
use mds_storage::StorageError;
use mds_store::StoreError;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such object, or not the caller's.
    #[error("{what} {reference:?} not found")]
    NotFound {
        what: &'static str,
        reference: String,
    },
    /// Not there, with a code of its own (`auth_not_enabled`).
    #[error("{message}")]
    Absent { code: &'static str, message: String },
    #[error("environment {reference:?} not found in project {project:?}")]
    EnvironmentNotFound { reference: String, project: String },
    /// A value breaks a rule; names its field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The caller's key lacks a scope.
    #[error("this API key lacks the {scope:?} scope")]
    Forbidden {
        scope: String,
        details: Option<Value>,
    },
    /// The request conflicts with the state of things (a taken name, an
    /// object in the wrong state).
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        details: Option<Value>,
    },
    /// Well-formed, but what it asks for failed (a build, a health check).
    #[error("{message}")]
    Failed {
        code: &'static str,
        message: String,
        details: Option<Value>,
    },
    /// Existed once, and is gone for good (a collected artifact).
    #[error("{message}")]
    Gone {
        code: &'static str,
        message: String,
        details: Option<Value>,
    },
    /// Not serving right now (starting, no healthy instance); retry.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// A row this server does not know how to act on (written by a newer
    /// version, or by hand): nothing was done.
    #[error("{message}")]
    Unsupported { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Our own fault; the message is for the log, not the client.
    #[error("{0}")]
    Internal(String),
}

pub type ControlResult<T> = Result<T, ControlError>;

impl ControlError {
    pub fn not_found(what: &'static str, reference: &str) -> Self {
        Self::NotFound {
            what,
            reference: reference.to_string(),
        }
    }

    pub fn environment_not_found(reference: &str, project: &str) -> Self {
        Self::EnvironmentNotFound {
            reference: reference.to_string(),
            project: project.to_string(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn missing(field: &str) -> Self {
        Self::invalid(field, "is required")
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn failed(code: &'static str, message: impl Into<String>) -> Self {
        Self::Failed {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn gone(code: &'static str, message: impl Into<String>) -> Self {
        Self::Gone {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            code: "UNAVAILABLE",
            message: message.into(),
        }
    }

    /// mds is still starting: the part asked for is not up yet.
    pub fn starting() -> Self {
        Self::unavailable("mds is starting; retry shortly")
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    /// Adds details (for the variants that carry them).
    pub fn with_details(mut self, value: Value) -> Self {
        match &mut self {
            Self::Forbidden { details, .. }
            | Self::Conflict { details, .. }
            | Self::Failed { details, .. }
            | Self::Gone { details, .. } => *details = Some(value),
            _ => {}
        }
        self
    }
}

impl From<FieldError> for ControlError {
    fn from(e: FieldError) -> Self {
        Self::invalid(e.field, e.message)
    }
}

impl From<ProvisionError> for ControlError {
    fn from(e: ProvisionError) -> Self {
        match e {
            ProvisionError::UnknownKind(_) | ProvisionError::UnknownState(_) => Self::Unsupported {
                code: "UNKNOWN_KIND",
                message: e.to_string(),
            },
            ProvisionError::Store(e) => e.into(),
            other => Self::internal(other),
        }
    }
}
