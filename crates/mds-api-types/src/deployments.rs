//! What `/deployments` answers: deployments, their versions (and the same
//! versions as MIOSA releases), runtime instances, logs, variables and
//! links. Field names and enum values are the ones the MIOSA SDK's models
//! read (miosa-api.md 9.5); fields the SDK has and mds does not fill are
//! `null`, not absent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{time, Timestamp};

/// A deployment: `active_version_id` is production's; `environments` has
/// each environment's, by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub tenant_id: String,
    pub owner_id: Option<String>,
    pub workspace_id: Option<String>,
    pub project_id: Option<String>,
    pub name: String,
    pub slug: String,
    pub repo_url: Option<String>,
    pub repo_provider: Option<String>,
    pub branch: Option<String>,
    pub build_command: Option<String>,
    pub run_command: Option<String>,
    pub port: Option<i32>,
    pub health_check_path: Option<String>,
    /// `static` or `dynamic`, of what serves (else of the newest version).
    pub kind: Option<String>,
    pub runtime_image: Option<String>,
    pub current_build_id: Option<String>,
    pub active_version_id: Option<String>,
    pub active_release_id: Option<String>,
    pub running_artifact_sha256: Option<String>,
    /// Always `sandbox`: versions are packed from sandboxes.
    pub source_type: String,
    /// pending | building | running | stopped | failed
    pub state: String,
    pub auto_deploy: bool,
    pub custom_domain_id: Option<String>,
    pub linked_database_id: Option<String>,
    pub metadata: Value,
    pub public_url: String,
    pub auto_subdomain: String,
    #[serde(default)]
    pub environments: BTreeMap<String, DeploymentEnvironment>,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize")]
    pub updated_at: Timestamp,
}

/// What serves a deployment in one environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentEnvironment {
    pub environment_id: String,
    pub active_version_id: String,
    pub active_release_id: String,
    pub previous_version_id: Option<String>,
    pub url: String,
    #[serde(serialize_with = "time::serialize")]
    pub updated_at: Timestamp,
}

/// An immutable version of a deployment's code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    pub id: String,
    pub deployment_id: String,
    pub tenant_id: String,
    pub workspace_id: Option<String>,
    pub project_id: Option<String>,
    pub created_by: Option<String>,
    pub source_sandbox_id: Option<String>,
    pub build_id: Option<String>,
    pub version_number: i32,
    /// `static` or `dynamic`
    pub kind: String,
    /// created | building | ready | failed | archived
    pub state: String,
    pub artifact_uri: Option<String>,
    pub artifact_manifest: Value,
    pub artifact_sha256: Option<String>,
    pub artifact_bytes: Option<i64>,
    pub runtime_image: Option<String>,
    pub runtime_command: Option<String>,
    pub runtime_port: Option<i32>,
    pub health_check_path: Option<String>,
    pub build_log_uri: Option<String>,
    pub output_path: Option<String>,
    pub entrypoint: Option<String>,
    pub metadata: Value,
    #[serde(serialize_with = "time::serialize_option")]
    pub promoted_at: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize_option")]
    pub archived_at: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize_option")]
    pub ready_at: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize")]
    pub updated_at: Timestamp,
}

impl Version {
    /// The manifest's file count, when the version was packed.
    pub fn files(&self) -> Option<u64> {
        self.artifact_manifest.get("files").and_then(Value::as_u64)
    }
}

/// A version as a MIOSA release (`rel_` + the version id's suffix).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Release {
    pub id: String,
    pub deployment_id: String,
    pub deployment_version_id: String,
    pub tenant_id: String,
    pub project_id: Option<String>,
    pub source_sandbox_id: Option<String>,
    /// `static` or `rootfs`
    pub kind: String,
    pub state: String,
    pub artifact_uri: Option<String>,
    pub artifact_sha256: Option<String>,
    pub artifact_manifest: Value,
    pub storage_backend: String,
    pub storage_uri: Option<String>,
    pub sha256: Option<String>,
    pub size_bytes: Option<i64>,
    pub start_command: Option<String>,
    pub port: Option<i32>,
    pub health_check_path: Option<String>,
    pub metadata: ReleaseMetadata,
    #[serde(serialize_with = "time::serialize_option")]
    pub ready_at: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize_option")]
    pub archived_at: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize")]
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseMetadata {
    pub version_number: i32,
}

/// A runtime instance serving a version in one environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub deployment_id: String,
    pub environment_id: String,
    pub environment: String,
    pub service_id: Option<String>,
    pub release_id: String,
    pub version_id: String,
    pub tenant_id: String,
    pub host_id: String,
    pub desired_state: String,
    pub state: String,
    pub ip_address: String,
    pub port: Option<i32>,
    pub health_check_path: Option<String>,
    #[serde(serialize_with = "time::serialize_option")]
    pub last_health_check_at: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize_option")]
    pub last_heartbeat_at: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize_option")]
    pub started_at: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize_option")]
    pub stopped_at: Option<Timestamp>,
    pub error_message: Option<String>,
    pub restart_count: i32,
    pub metadata: Value,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize")]
    pub updated_at: Timestamp,
}

/// The answer to a publish (`POST /deployments/{id}/publish`,
/// `POST /sandboxes/{id}/deploy`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    pub deployment: Deployment,
    pub version: Version,
    pub release: Release,
    /// The service now serving, when promoted.
    pub services: Vec<PublishedService>,
    pub promoted: bool,
    pub environment: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishedService {
    pub id: String,
    pub deployment_id: String,
    pub environment_id: String,
    pub tenant_id: String,
    /// `static_web` or `web`
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub desired_replicas: u32,
    pub state: String,
    pub metadata: ServiceMetadata,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceMetadata {
    pub url: String,
}

/// The recent output of one instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceLogs {
    pub instance_id: String,
    pub state: String,
    /// `lines` joined by newlines.
    pub logs: String,
    pub lines: Vec<String>,
}

/// The recent output of a deployment's live instances, each line
/// prefixed with `[environment instance]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentLogs {
    pub deployment_id: String,
    pub instances: Vec<String>,
    pub logs: String,
    pub lines: Vec<String>,
}

/// A deployment's variable in one environment, as a preview.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentVariable {
    pub name: String,
    /// Same as `name`; some clients read this.
    pub key: String,
    pub preview: String,
    pub is_secret: bool,
    pub environment: String,
    pub environment_id: String,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize")]
    pub updated_at: Timestamp,
}

/// The answer to `POST /deployments/{id}/database`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseLink {
    pub deployment_id: String,
    pub database_id: String,
    pub linked_database_id: String,
    pub project_id: String,
    /// The environment asked for, or `all`.
    pub environment: String,
    /// The variables the link injects at boot.
    pub env_vars: Vec<String>,
    pub attached: bool,
}

/// A volume a deployment's instances mount in one environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeClaim {
    pub deployment_id: String,
    pub environment: String,
    pub volume_id: String,
    pub mount_path: String,
}

/// `POST /deployments`; `PATCH /deployments/{id}` reads the name, the
/// commands, the port and the health check path. The SDK's create sends
/// only a name and `metadata`, which may hold `port`,
/// `health_check_path` and `project_id`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateDeployment {
    pub name: Option<String>,
    pub run_command: Option<String>,
    pub build_command: Option<String>,
    pub port: Option<i64>,
    pub health_check_path: Option<String>,
    pub metadata: Option<Value>,
    pub project_id: Option<String>,
    pub project_slug: Option<String>,
}

/// `POST /deployments/{id}/publish`, and `POST /sandboxes/{id}/deploy`
/// (which names the deployment by `deployment_id` or `name`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Publish {
    pub source_sandbox_id: Option<String>,
    /// Same as `source_sandbox_id`.
    pub sandbox_id: Option<String>,
    /// The directory of the workspace to publish (all of it by default).
    pub output_path: Option<String>,
    pub entrypoint: Option<String>,
    /// Serve it at once (the default).
    pub promote: Option<bool>,
    pub environment: Option<String>,
    /// auto (the default), static or dynamic.
    pub kind: Option<String>,
    pub run_command: Option<String>,
    pub port: Option<i64>,
    pub health_check_path: Option<String>,
    pub name: Option<String>,
    pub deployment_id: Option<String>,
}

/// `POST /deployments/{id}/env`: `env` (or `variables`) is an object of
/// `NAME: value`, for one environment (production by default).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SetDeploymentVariables {
    pub env: Option<Value>,
    pub variables: Option<Value>,
    pub environment: Option<String>,
    pub secret: Option<bool>,
    pub is_secret: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::microseconds(678_901)
    }

    /// The SDK's models read every field by name: the ones mds does not
    /// fill are there as null, and timestamps have the API's one format.
    #[test]
    fn a_deployment_has_every_field_the_sdk_reads() {
        let environment = DeploymentEnvironment {
            environment_id: "env_1".into(),
            active_version_id: "ver_1".into(),
            active_release_id: "rel_1".into(),
            previous_version_id: None,
            url: "http://shop.production.localhost:7070".into(),
            updated_at: at(),
        };
        let deployment = Deployment {
            id: "dep_1".into(),
            tenant_id: "ten_1".into(),
            owner_id: None,
            workspace_id: None,
            project_id: Some("prj_1".into()),
            name: "shop".into(),
            slug: "shop".into(),
            repo_url: None,
            repo_provider: None,
            branch: None,
            build_command: None,
            run_command: None,
            port: None,
            health_check_path: None,
            kind: Some("static".into()),
            runtime_image: None,
            current_build_id: None,
            active_version_id: Some("ver_1".into()),
            active_release_id: Some("rel_1".into()),
            running_artifact_sha256: None,
            source_type: "sandbox".into(),
            state: "running".into(),
            auto_deploy: false,
            custom_domain_id: None,
            linked_database_id: None,
            metadata: serde_json::json!({}),
            public_url: "http://shop.production.localhost:7070".into(),
            auto_subdomain: "shop.production.localhost".into(),
            environments: [("production".to_string(), environment)].into(),
            created_at: at(),
            updated_at: at(),
        };
        let json = serde_json::to_value(&deployment).unwrap();
        for field in ["owner_id", "repo_url", "runtime_image", "custom_domain_id"] {
            assert!(json[field].is_null(), "{field}");
            assert!(json.as_object().unwrap().contains_key(field), "{field}");
        }
        assert_eq!(json["created_at"], "2026-01-02T03:04:05.678Z");
        assert_eq!(
            json["environments"]["production"]["updated_at"],
            "2026-01-02T03:04:05.678Z"
        );
        let back: Deployment = serde_json::from_value(json).unwrap();
        assert_eq!(back.environments["production"].active_version_id, "ver_1");
        assert_eq!(back.created_at.timestamp_millis(), at().timestamp_millis());
    }
}
