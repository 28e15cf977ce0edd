//! What a domain operation can refuse or fail with. The server maps each
//! variant to an HTTP status and MIOSA code in one place
//! (`mds-server/src/error.rs`); nothing here knows HTTP.

use std::time::Duration;

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
    /// The end-user auth API refused, with a reason its clients branch on.
    #[error(transparent)]
    Auth(#[from] AuthRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Our own fault; the message is for the log, not the client.
    #[error("{0}")]
    Internal(String),
}

pub type ControlResult<T> = Result<T, ControlError>;

/// Why the end-user auth API refused: the cases GoTrue's clients tell
/// apart by `error_code` ([`AuthRefusal::code`]).
#[derive(Debug, thiserror::Error)]
pub enum AuthRefusal {
    /// A field breaks a rule (`validation_failed`).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// `rule` says what a password needs; `reasons` are GoTrue's names
    /// for what this one lacks.
    #[error("password: {rule}")]
    WeakPassword {
        rule: String,
        reasons: Vec<&'static str>,
    },
    #[error("signups are turned off for this app")]
    SignupDisabled,
    #[error("a user with this email address already exists; log in instead")]
    UserAlreadyExists,
    /// Changing to an address another user has.
    #[error("another user has this email address")]
    EmailExists,
    #[error("Invalid login credentials")]
    InvalidCredentials,
    #[error("confirm your email address first: follow the link in the message we sent")]
    EmailNotConfirmed,
    #[error("Invalid Refresh Token: Already Used (the session is revoked; log in again)")]
    RefreshTokenAlreadyUsed,
    #[error("Invalid Refresh Token: Refresh Token Not Found")]
    RefreshTokenNotFound,
    /// Forged, expired or of another realm.
    #[error("{0}")]
    BadJwt(String),
    #[error("this session has ended (logged out or revoked); log in again")]
    SessionNotFound,
    #[error("this link or token is invalid or has expired")]
    OtpExpired,
    /// Over a rate limit for `what` (this address, this account).
    #[error("too many attempts for {what}; retry in {retry_in_secs} s")]
    RateLimited {
        what: &'static str,
        retry_in_secs: u64,
        retry_after: Duration,
    },
}

impl AuthRefusal {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    /// GoTrue's `error_code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "validation_failed",
            Self::WeakPassword { .. } => "weak_password",
            Self::SignupDisabled => "signup_disabled",
            Self::UserAlreadyExists => "user_already_exists",
            Self::EmailExists => "email_exists",
            Self::InvalidCredentials => "invalid_credentials",
            Self::EmailNotConfirmed => "email_not_confirmed",
            Self::RefreshTokenAlreadyUsed => "refresh_token_already_used",
            Self::RefreshTokenNotFound => "refresh_token_not_found",
            Self::BadJwt(_) => "bad_jwt",
            Self::SessionNotFound => "session_not_found",
            Self::OtpExpired => "otp_expired",
            Self::RateLimited { .. } => "over_request_rate_limit",
        }
    }
}

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
