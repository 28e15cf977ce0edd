//! Wire types of the MIOSA-compatible REST API.
//!
//! Responses are wrapped: `{"data": ...}` for one object, plus `page` for
//! lists; errors are `{"error": {code, message, request_id, details?}}`.
//! Request fields are optional here and validated by the server, so a
//! missing or malformed field gets a 422 naming it instead of a parse error.
//! Unknown fields are ignored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub type Timestamp = DateTime<Utc>;

/// `{"data": T}`
#[derive(Debug, Serialize, Deserialize)]
pub struct Data<T> {
    pub data: T,
}

/// `{"data": [T], "page": {...}}`
#[derive(Debug, Serialize, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
    pub page: Page,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Page {
    pub page: u32,
    pub page_size: u32,
    pub total: u64,
}

/// `{"error": {...}}`
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Who a client says a request is on behalf of. Stored and echoed back;
/// never used to decide access.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Attribution {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_project_id: Option<String>,
}

// ---------------------------------------------------------------- projects

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub description: Option<String>,
    pub tenant_id: String,
    pub workspace_id: String,
    pub metadata: Value,
    pub default_environment_id: Option<String>,
    #[serde(default)]
    pub environments: Vec<Environment>,
    #[serde(flatten)]
    pub attribution: Attribution,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CreateProject {
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(flatten)]
    pub attribution: Attribution,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UpdateProject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

// ------------------------------------------------------------ environments

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub slug: String,
    pub kind: String,
    pub is_default: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CreateEnvironment {
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UpdateEnvironment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
}

// -------------------------------------------------------- shared variables

/// A variable as listed: a preview, never the value unless revealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Variable {
    pub name: String,
    pub preview: String,
    pub is_secret: bool,
    pub environment: String,
    pub environment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The body of `PUT /projects/{id}/shared-variables`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SetVariables {
    pub variables: Option<VariablesInput>,
    /// Environment name, slug or id; `environment` is accepted too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// `{"NAME": "value"}` or `[{"name", "value", "is_secret"?}]`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VariablesInput {
    Map(BTreeMap<String, String>),
    List(Vec<VariableInput>),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VariableInput {
    pub name: String,
    pub value: String,
    #[serde(default, alias = "secret", skip_serializing_if = "Option::is_none")]
    pub is_secret: Option<bool>,
}

// ---------------------------------------------------------------- api keys

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub tenant_id: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// The plaintext key: present only in the answer to create and rotate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Same as `token`; some clients read this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CreateApiKey {
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UpdateApiKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

// ------------------------------------------------------------------ health

#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    #[serde(default)]
    pub engines: BTreeMap<String, String>,
    #[serde(default)]
    pub migrations_applied: bool,
}

/// `DIR/server.json`: where a running server listens, for the CLI to find.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerInfo {
    pub url: String,
    pub pid: u32,
}
