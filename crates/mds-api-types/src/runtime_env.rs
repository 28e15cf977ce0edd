//! Runtime env (`/runtime-env`, `client.runtime_env`): variables of the
//! tenant, its workspace or a project, injected at boot into sandboxes,
//! runtime instances or both.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time;
use crate::Timestamp;

/// The body of `POST /runtime-env` (the SDK drops `None` fields).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SetRuntimeEnv {
    pub scope: Option<String>,
    pub workspace_id: Option<String>,
    pub project_id: Option<String>,
    pub target: Option<String>,
    pub name: Option<String>,
    pub value: Option<String>,
    pub enabled: Option<bool>,
    pub metadata: Option<Value>,
}

/// One runtime-env variable: a preview, and its value only when revealed.
#[derive(Debug, Serialize, Deserialize)]
pub struct RuntimeEnvVar {
    pub id: String,
    pub scope: String,
    pub workspace_id: String,
    pub project_id: Option<String>,
    pub target: String,
    pub name: String,
    pub preview: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub is_secret: bool,
    pub enabled: bool,
    pub metadata: Value,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize")]
    pub updated_at: Timestamp,
}
