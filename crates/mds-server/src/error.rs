//! The one mapping from failures to HTTP statuses and MIOSA error codes.
//!
//! Every error leaves as `{"error": {code, message, request_id, details?}}`
//! with `Content-Type: application/json`. A client's mistake is a 4xx that
//! names what to fix; only our own faults are 500, and those are logged here,
//! where they are handled.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mds_api_types::{ErrorBody, ErrorEnvelope};
use mds_control::deployer::DeployError;
use mds_control::{AuthRefusal, ControlError};
use mds_core::FieldError;
use mds_storage::StorageError;
use mds_store::StoreError;
use serde_json::{json, Value};

use crate::request_id::current_request_id;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Set for transient failures: the client may retry after this long.
    pub retry_after: Option<Duration>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn not_found(what: &str, reference: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{what} {reference:?} not found"),
        )
    }

    /// An SDK call this server knows but does not offer: 501, naming the
    /// feature, so a client can tell "not here" from a wrong path.
    pub fn not_implemented(feature: &str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "NOT_IMPLEMENTED",
            format!("{feature} is not implemented by this server"),
        )
    }

    pub fn environment_not_found(reference: &str, project: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ENVIRONMENT_NOT_FOUND",
            format!("environment {reference:?} not found in project {project:?}"),
        )
    }

    /// 422 with `details.field`, for a value that breaks a rule.
    pub fn validation(err: FieldError) -> Self {
        Self::invalid_field(err.field, err.message)
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::field_error("VALIDATION_ERROR", field, message)
    }

    /// 422 with `details.field`, under `code`.
    pub fn field_error(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            format!("{field}: {message}"),
        )
        .with_details(json!({ "field": field, "reason": message }))
    }

    pub fn missing_field(field: &str) -> Self {
        Self::invalid_field(field, "is required")
    }

    pub fn invalid_token(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", message)
    }

    pub fn insufficient_scope(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this API key lacks the {scope:?} scope"),
        )
        .with_details(json!({ "required_scope": scope }))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TOO_LARGE",
            format!("request body is larger than the {limit}-byte limit"),
        )
        .with_details(json!({ "limit_bytes": limit }))
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The platform is starting or its database is restarting.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
            .retry_after(Duration::from_secs(1))
    }

    /// Our fault. The cause is logged; the client sees only the request id.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(request_id = %current_request_id(), error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error; the server log has the details under this request id",
        )
    }
}

impl From<FieldError> for ApiError {
    fn from(err: FieldError) -> Self {
        Self::validation(err)
    }
}

impl From<ControlError> for ApiError {
    fn from(err: ControlError) -> Self {
        let with = |e: Self, details: Option<Value>| match details {
            Some(details) => e.with_details(details),
            None => e,
        };
        match err {
            ControlError::NotFound { what, reference } => Self::not_found(what, &reference),
            ControlError::Absent { code, message } => {
                Self::new(StatusCode::NOT_FOUND, code, message)
            }
            ControlError::EnvironmentNotFound { reference, project } => {
                Self::environment_not_found(&reference, &project)
            }
            ControlError::Invalid { field, message } => Self::invalid_field(&field, message),
            ControlError::Forbidden { scope, details } => {
                with(Self::insufficient_scope(&scope), details)
            }
            ControlError::Conflict {
                code,
                message,
                details,
            } => with(Self::conflict(code, message), details),
            ControlError::Failed {
                code,
                message,
                details,
            } => with(
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message),
                details,
            ),
            ControlError::Gone {
                code,
                message,
                details,
            } => with(Self::new(StatusCode::GONE, code, message), details),
            ControlError::Unavailable { code, message } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
                    .retry_after(Duration::from_secs(1))
            }
            ControlError::Unsupported { code, message } => {
                tracing::error!(request_id = %current_request_id(), error = %message, "refused");
                Self::new(StatusCode::NOT_IMPLEMENTED, code, message)
            }
            ControlError::Auth(e) => e.into(),
            ControlError::Store(e) => e.into(),
            ControlError::Storage(e) => e.into(),
            ControlError::Internal(cause) => Self::internal(cause),
        }
    }
}

/// The end-user API's refusals, under GoTrue's `error_code`s.
impl From<AuthRefusal> for ApiError {
    fn from(err: AuthRefusal) -> Self {
        let code = err.code();
        let status = match &err {
            AuthRefusal::Invalid { field, message } => {
                return Self::field_error(code, field, message.clone())
            }
            AuthRefusal::WeakPassword { rule, .. } => {
                return Self::field_error(code, "password", rule.clone())
            }
            AuthRefusal::RateLimited { retry_after, .. } => {
                let after = *retry_after;
                return Self::new(StatusCode::TOO_MANY_REQUESTS, code, err.to_string())
                    .retry_after(after);
            }
            AuthRefusal::SignupDisabled | AuthRefusal::OtpExpired => StatusCode::FORBIDDEN,
            AuthRefusal::UserAlreadyExists | AuthRefusal::EmailExists => StatusCode::CONFLICT,
            AuthRefusal::InvalidCredentials
            | AuthRefusal::EmailNotConfirmed
            | AuthRefusal::RefreshTokenAlreadyUsed
            | AuthRefusal::RefreshTokenNotFound => StatusCode::BAD_REQUEST,
            AuthRefusal::BadJwt(_) | AuthRefusal::SessionNotFound => StatusCode::UNAUTHORIZED,
        };
        Self::new(status, code, err.to_string())
    }
}

impl From<DeployError> for ApiError {
    fn from(err: DeployError) -> Self {
        ControlError::from(err).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "control-plane database unavailable");
                Self::unavailable("the metadata database is unavailable; retry shortly")
            }
            StoreError::Conflict { constraint } => Self::conflict(
                "CONFLICT",
                format!("conflicts with an existing object ({constraint})"),
            ),
            other => Self::internal(other),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        let message = err.to_string();
        match err {
            StorageError::NoSuchBucket => Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message),
            StorageError::NoSuchKey | StorageError::NoSuchUpload => {
                Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
            }
            StorageError::BucketNotEmpty => Self::conflict("BUCKET_NOT_EMPTY", message)
                .with_details(json!({ "hint": "pass ?force=true to delete its objects too" })),
            StorageError::BucketExists => Self::conflict("CONFLICT", message),
            StorageError::InvalidBucketName(why) => Self::invalid_field("name", why),
            StorageError::InvalidKey(why) => Self::invalid_field("key", why.to_string()),
            StorageError::TooLarge { limit } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE", message)
                    .with_details(json!({ "limit_bytes": limit }))
            }
            StorageError::BadDigest
            | StorageError::InvalidPart(_)
            | StorageError::InvalidPartOrder
            | StorageError::EntityTooSmall(_) => Self::bad_request("INVALID_REQUEST", message),
            StorageError::InvalidRange => {
                Self::new(StatusCode::RANGE_NOT_SATISFIABLE, "INVALID_RANGE", message)
            }
            StorageError::Body(_) => Self::bad_request("INVALID_BODY", message),
            StorageError::Io(e) => Self::internal(e),
            StorageError::Store(e) => e.into(),
        }
    }
}

impl From<mds_provision::ProvisionError> for ApiError {
    fn from(err: mds_provision::ProvisionError) -> Self {
        ControlError::from(err).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_ms = self.retry_after.map(|d| d.as_millis() as u64);
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: self.code.to_string(),
                message: self.message,
                request_id: current_request_id(),
                details: self.details,
                retryable: retry_ms.map(|_| true),
                retry_after_ms: retry_ms,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
