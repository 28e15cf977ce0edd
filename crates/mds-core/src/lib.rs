//! The mds model: identifiers, names, scopes and variable previews.
//!
//! Everything here is pure: no I/O, no clocks except ULID minting. The
//! server, the store and the CLI share these rules so a name the CLI accepts
//! is a name the server accepts.

pub mod env;
pub mod ids;
pub mod kinds;
pub mod names;
pub mod net;
pub mod scopes;
pub mod spans;
pub mod tenancy;
pub mod vars;

/// A rule a client-supplied value broke, naming the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}
