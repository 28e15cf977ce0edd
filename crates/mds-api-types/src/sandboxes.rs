//! What `/sandboxes` answers: sandboxes, their readiness, command results
//! (whole, or as server-sent events) and their own variables.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{time, Timestamp};

/// A sandbox as the SDK's `Sandbox` reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    /// creating | running | stopped | paused | error | destroyed
    pub state: String,
    pub ready: bool,
    pub template_id: String,
    pub tenant_id: String,
    pub project_id: Option<String>,
    pub project_slug: Option<String>,
    pub project_name: Option<String>,
    pub environment: Option<String>,
    pub environment_id: Option<String>,
    pub name: Option<String>,
    /// Same as `name`.
    pub slug: Option<String>,
    pub tags: Vec<String>,
    /// The creator's metadata, plus `environment` and `last_error`.
    pub metadata: Map<String, Value>,
    pub persistent: bool,
    pub always_on: bool,
    pub boot_path: String,
    pub boot_ms: Option<i32>,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize")]
    pub updated_at: Timestamp,
    #[serde(serialize_with = "time::serialize_option")]
    pub started_at: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize_option")]
    pub ready_at: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize_option")]
    pub stopped_at: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize_option")]
    pub destroyed_at: Option<Timestamp>,
}

/// `GET /sandboxes/{id}/readiness`, and each event of its stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub state: String,
    /// `ready` or `not_ready`
    pub status: String,
    /// Each component the SDK knows, with `status`.
    pub components: BTreeMap<String, String>,
}

/// A finished command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    /// Same as `exit_code`; some clients read this name.
    #[serde(rename = "exitCode")]
    pub exit_code_camel: i32,
    pub duration_ms: u64,
    pub timed_out: bool,
    pub truncated: bool,
}

/// A `stdout` or `stderr` event of `exec/stream`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecLine {
    pub line: String,
}

/// The `exit` event of `exec/stream`: the exit code, and how it ran, or
/// `-1` with `error` when it could not run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecExit {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /sandboxes/{id}/env`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxEnv {
    pub vars: Vec<SandboxVar>,
}

/// One of a sandbox's own variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxVar {
    pub key: String,
    pub preview: String,
    /// Always true: stored sealed.
    pub encrypted: bool,
    /// Always `sandbox`.
    pub source: String,
    /// Present only for a key with `env:reveal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `POST /sandboxes`. The template may be named `template_id`, `template`
/// or `image`; the project by id or slug; the environment by any of its
/// three names (or `metadata.environment`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateSandbox {
    pub template_id: Option<String>,
    pub template: Option<String>,
    pub image: Option<String>,
    pub name: Option<String>,
    /// Its own variables, `NAME: value`.
    pub env: Option<Value>,
    pub metadata: Option<Value>,
    pub tags: Option<Vec<String>>,
    pub project_id: Option<String>,
    pub project_slug: Option<String>,
    pub environment: Option<String>,
    pub environment_id: Option<String>,
    pub env_id: Option<String>,
}

/// `POST /sandboxes/{id}/exec` (and `exec/stream`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Exec {
    pub command: Option<String>,
    pub cwd: Option<String>,
    /// Same as `cwd`.
    pub working_dir: Option<String>,
    /// Variables for this command only, over the sandbox's.
    pub env: Option<Value>,
    /// Seconds (at most 600; 60 by default).
    pub timeout: Option<f64>,
    pub timeout_sec: Option<f64>,
}
