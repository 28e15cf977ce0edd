//! The SDK's project calls beyond create/read/update/delete: the summary,
//! environment duplicate and sync, capabilities.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Environment;

/// `GET /projects/{id}/summary`: what the project holds, counted, with
/// each data service's state per environment.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProjectSummary {
    pub project_id: String,
    pub name: String,
    pub slug: String,
    pub counts: SummaryCounts,
    pub environments: Vec<EnvironmentSummary>,
    pub data_services: Vec<ServiceSummary>,
    /// Sandboxes by state (`running`, `stopped`, ...; destroyed ones too).
    pub sandboxes: BTreeMap<String, u64>,
    pub deployments: Vec<DeploymentSummary>,
    pub volumes: VolumeSummary,
    pub buckets: BucketSummary,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SummaryCounts {
    pub environments: u64,
    pub data_services: u64,
    /// Sandboxes not destroyed.
    pub sandboxes: u64,
    pub deployments: u64,
    pub runtime_instances: u64,
    pub volumes: u64,
    pub buckets: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnvironmentSummary {
    pub id: String,
    pub name: String,
    pub is_default: bool,
    /// Data-service name -> its binding's state here.
    pub services: BTreeMap<String, String>,
    /// Sandboxes (not destroyed) booting into this environment.
    pub sandboxes: u64,
    /// Runtime instances by state.
    pub runtime_instances: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub state: String,
    /// Environment name -> binding state.
    pub environments: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeploymentSummary {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub stopped: bool,
    /// Runtime instances by state.
    pub runtime_instances: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VolumeSummary {
    pub total: u64,
    pub attached: u64,
    pub size_bytes: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BucketSummary {
    pub total: u64,
    pub public: u64,
}

/// The body of `POST .../environments/{id}/duplicate`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DuplicateEnvironment {
    pub name: Option<String>,
    pub slug: Option<String>,
}

/// The body of `POST .../environments/{id}/sync`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SyncEnvironment {
    pub from_environment_id: Option<String>,
    pub apply: Option<bool>,
}

/// One variable that differs: what a sync writes (or would).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncChange {
    /// `shared`, `service` or `deployment`.
    pub set: String,
    /// The data service or deployment, for those sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub name: String,
    /// `add` (missing here) or `update` (differs here).
    pub action: String,
    pub is_secret: bool,
}

/// Something of the source a sync does not carry over, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncSkipped {
    pub kind: String,
    pub name: String,
    pub reason: String,
}

/// The answer of a sync (and the copy a duplicate made): nothing is ever
/// removed.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnvironmentSync {
    pub environment_id: String,
    pub environment: String,
    pub from_environment_id: String,
    pub from_environment: String,
    pub applied: bool,
    pub changes: Vec<SyncChange>,
    /// Variables equal on both sides.
    pub unchanged: u64,
    pub skipped: Vec<SyncSkipped>,
}

/// The answer of a duplicate: the new environment, what was copied into
/// it, and the data services whose bindings (new, empty) it gets.
#[derive(Debug, Serialize, Deserialize)]
pub struct DuplicatedEnvironment {
    #[serde(flatten)]
    pub environment: Environment,
    pub duplicated_from: String,
    pub copied: Vec<SyncChange>,
    pub services: Vec<String>,
    pub skipped: Vec<SyncSkipped>,
}

/// `GET /project-capabilities`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProjectCapabilities {
    pub services_api: bool,
    pub image_source: bool,
    pub template_apply: bool,
}
