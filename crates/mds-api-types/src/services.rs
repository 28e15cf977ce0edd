//! Wire views of the MIOSA project services (`/services/{id}`), database
//! logs and the small answers several routes share.

use serde::{Deserialize, Serialize};

use crate::{Binding, Timestamp};

/// `{"id": .., "deleted": true}`: what a delete answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

/// `{"key": .., "deleted": true}`: what deleting an object answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletedObject {
    pub deleted: bool,
    pub key: String,
}

/// `GET /storage/buckets`: the list under `data` and, as the SDK also
/// reads it, under `buckets`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketList<T> {
    pub buckets: Vec<T>,
    pub data: Vec<T>,
}

/// A service as the SDK's `client.services` reads it: a data service in
/// one environment (kind `database`), or an app service (`server`,
/// `worker`, `cron`, `static`) backed by a deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectService {
    pub bindings: Vec<Binding>,
    #[serde(serialize_with = "crate::time::serialize")]
    pub created_at: Timestamp,
    pub engine: Option<String>,
    pub env_prefix: String,
    pub environment_id: Option<String>,
    pub id: String,
    pub kind: String,
    pub lock_version: u32,
    pub name: String,
    pub project_id: String,
    /// A database's `{engine, engine_version}`; an app service's own.
    pub settings: serde_json::Value,
    pub slug: String,
    pub state: String,
    /// Why the state is what it is, when it is not running.
    pub state_reason: Option<String>,
    /// The deployment an app service's releases go to.
    pub deployment_id: Option<String>,
    pub tenant_id: String,
    #[serde(rename = "type")]
    pub service_type: String,
    #[serde(serialize_with = "crate::time::serialize")]
    pub updated_at: Timestamp,
}

/// What a boot of a service would receive, references resolved, previews
/// only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EffectiveVariables {
    pub environment: String,
    pub service_id: String,
    pub variables: Vec<EffectiveVariable>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EffectiveVariable {
    pub is_secret: bool,
    pub name: String,
    pub preview: String,
    /// "Postgres (binding)" or "Postgres (variable)".
    pub source: String,
}

/// One service variable, revealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevealedVariable {
    pub environment: String,
    pub name: String,
    pub source: String,
    pub value: String,
}

/// A database service's connection in one environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceConnection {
    pub database: Option<String>,
    pub environment: String,
    pub host: Option<String>,
    pub password: Option<String>,
    pub port: Option<u16>,
    pub private_url: String,
    /// Always null: mds serves no public endpoint.
    pub public_url: Option<String>,
    pub service_id: String,
    pub url: String,
    pub username: Option<String>,
}

/// `GET /databases/{id}/logs`: the bindings' provisioning events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseLogs {
    pub database_id: String,
    pub logs: Vec<DatabaseLogLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseLogLine {
    pub line: String,
    pub stream: String,
    #[serde(serialize_with = "crate::time::serialize")]
    pub t: Timestamp,
}

/// A data service's last connection check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionTest {
    pub status: String,
}

/// A named bundle of scopes (`GET /api-keys/presets`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyPreset {
    pub description: String,
    pub name: String,
    pub scopes: Vec<String>,
}
