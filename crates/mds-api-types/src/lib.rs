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

pub mod auth;
pub mod backups;
pub mod deployments;
pub mod metrics;
pub mod projects;
pub mod public_networking;
pub mod runtime_env;
pub mod sandboxes;
pub mod services;
pub mod time;
pub mod volumes;

/// Written as [`time`] says: RFC 3339, UTC, milliseconds.
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
    /// `allow` or `none`: whether its sandboxes and runtime instances
    /// reach the outside (they always reach their own data services).
    #[serde(default)]
    pub network_egress: String,
    #[serde(default)]
    pub environments: Vec<Environment>,
    #[serde(flatten)]
    pub attribution: Attribution,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_egress: Option<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_egress: Option<String>,
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
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize")]
    pub updated_at: Timestamp,
    /// When a preview with a ttl is purged (null: never).
    #[serde(default, serialize_with = "time::serialize_option")]
    pub expires_at: Option<Timestamp>,
    /// A scheduled credential rotation: every so many seconds, with this
    /// grace period (null: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_every_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_grace_secs: Option<i64>,
    /// Made `--from` another environment: what was copied, and whether it
    /// is done (null: made empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<EnvironmentData>,
}

/// How an environment made from another got its data. Nothing boots in
/// it until `state` is `ready`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EnvironmentData {
    pub source_environment_id: String,
    pub source_environment: String,
    /// `empty`, `schema` (Postgres tables without rows) or `copy`.
    pub policy: String,
    /// `copy` (users without their sessions) or `none`.
    pub auth_users: String,
    /// `TABLE.COLUMN=email|null|hash`, applied before anything connects.
    #[serde(default)]
    pub masks: Vec<String>,
    /// `copying`, `ready` or `failed`.
    #[serde(default)]
    pub state: String,
    /// The source's restore point it was filled from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What each data service got.
    #[serde(default)]
    pub services: Vec<CopiedService>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CopiedService {
    pub name: String,
    pub kind: String,
    /// `copy`, `schema` or `empty`.
    pub data: String,
    pub detail: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CreateEnvironment {
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Purged this long after creation (`7d`, `12h`; 1h to 90d; not on
    /// production or staging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Fill its data services from this environment's restore point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_environment: Option<String>,
    /// `empty`, `schema` or `copy` (the default with a source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_policy: Option<String>,
    /// `TABLE.COLUMN=email|null|hash` for each column to mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masks: Option<Vec<String>>,
    /// `copy` or `none`; by default `copy` with `data_policy` `copy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_users: Option<String>,
    /// Which of the source's restore points (an id, or `new` for one
    /// taken now); by default its newest verified one, else a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_point: Option<String>,
}

/// `POST .../environments/{e}/extend`: push a preview's expiry out.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ExtendEnvironment {
    pub ttl: Option<String>,
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
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize")]
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
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize")]
    pub updated_at: Timestamp,
    #[serde(serialize_with = "time::serialize_option")]
    pub last_used_at: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize_option")]
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
    /// Where backups go and what needs attention; absent while starting.
    #[serde(default)]
    pub backups: Option<BackupHealth>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupHealth {
    pub repository: String,
    pub same_disk_as_data: bool,
    /// Said plainly when the repository does not survive the data disk.
    pub warning: Option<String>,
    /// Failing drills, overdue backups, failed base backups.
    pub problems: Vec<String>,
    pub pitr: bool,
}

/// `DIR/server.json`: where a running server listens, for the CLI to find.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerInfo {
    pub url: String,
    /// The S3 endpoint.
    #[serde(default)]
    pub s3_url: Option<String>,
    pub pid: u32,
}

// ----------------------------------------------------------- data services

/// A data service attached to a project, with one binding per environment.
/// The MIOSA `/databases` routes show the same object with `engine` set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataService {
    pub id: String,
    /// `None` for a standalone database or bucket (made without a project).
    pub project_id: Option<String>,
    pub standalone: bool,
    pub tenant_id: String,
    /// `postgres`, later `redis`, `storage`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    /// Prefix of the injected names: "" for the first of its kind.
    pub env_prefix: String,
    /// The one environment it is bound in, or none for all of them.
    pub environment_id: Option<String>,
    /// provisioning | running | stopped | error | deleting
    pub state: String,
    pub bindings: Vec<Binding>,
    /// MIOSA database fields.
    pub engine: String,
    pub engine_version: String,
    pub region: String,
    pub connection_test: Option<services::ConnectionTest>,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize")]
    pub updated_at: Timestamp,
}

/// A data service in one environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Binding {
    pub id: String,
    pub environment: String,
    pub environment_id: String,
    pub state: String,
    pub desired: String,
    pub last_error: Option<String>,
    /// The database and role name on the engine.
    pub resource: String,
    #[serde(serialize_with = "time::serialize_option")]
    pub ready_at: Option<Timestamp>,
    /// Postgres: how its clients are pooled, and the pool's use now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<Pool>,
}

/// A Postgres binding's pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pool {
    /// `transaction`, `session` or `off`.
    pub mode: String,
    /// Server connections at most.
    pub size: u32,
    /// Client connections on the pooler at most; null when this server's
    /// pooler cannot limit them per binding (pgbouncer before 1.24).
    pub max_clients: Option<u32>,
    /// Whether `DATABASE_URL` goes through the pooler (from the next boot
    /// after a change); `DATABASE_URL_UNPOOLED` never does.
    pub pooled: bool,
    /// The counters, while the pooler runs (else null).
    pub clients_active: Option<i64>,
    pub clients_waiting: Option<i64>,
    pub servers_active: Option<i64>,
    pub servers_idle: Option<i64>,
    pub max_wait_ms: Option<i64>,
}

/// `PATCH /projects/{p}/data-services/{service}`: a binding's pooling (or
/// every binding's, without `environment`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateDataService {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// `transaction`, `session` or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_mode: Option<String>,
    /// A number, or null for the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<serde_json::Value>,
    /// Client connections on the pooler at most: a number, or null for
    /// the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_max_clients: Option<serde_json::Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CreateDataService {
    #[serde(rename = "type", alias = "kind")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Redis: the memory limit, such as `256mb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxmemory: Option<String>,
    /// Redis: the eviction policy (`noeviction`, `allkeys-lru`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction: Option<String>,
    /// The major version (`"15"`); refused when this server has not got it.
    #[serde(default, alias = "version", skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// Attach this standalone database or bucket instead of making one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing: Option<String>,
    /// Postgres: `transaction` (the default), `session` or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_mode: Option<String>,
    /// Postgres: server connections of each binding's pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<i64>,
    /// Postgres: client connections each binding may hold on the pooler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_max_clients: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CreateDatabase {
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, alias = "version", skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxmemory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction: Option<String>,
}

/// How to connect to one binding (it holds a password).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub database_id: String,
    pub environment: String,
    pub url: String,
    pub database_url: String,
    pub connection_string: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub dbname: String,
    pub username: String,
    pub user: String,
    pub password: String,
    /// The variables this binding injects, by name.
    pub env: BTreeMap<String, String>,
}

// ------------------------------------------------------------- resolution

/// The environment a process of (project, environment) gets at boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolvedEnv {
    pub project_id: String,
    pub environment: String,
    pub environment_id: String,
    pub variables: Vec<EnvEntry>,
    /// Bindings not yet running, whose names are missing for now.
    pub pending: Vec<Binding>,
    /// How old each running binding's credentials are.
    #[serde(default)]
    pub credentials: Vec<CredentialAge>,
}

/// A binding's credentials: when the current ones were made, how many
/// rotations there were, and until when the replaced ones still work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialAge {
    pub service: String,
    pub kind: String,
    #[serde(serialize_with = "time::serialize")]
    pub made_at: Timestamp,
    pub rotations: i32,
    #[serde(default, serialize_with = "time::serialize_option")]
    pub previous_valid_until: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvEntry {
    pub name: String,
    /// Present only when revealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub preview: String,
    pub secret: bool,
    pub source: EnvSource,
    /// Lower-precedence sources this value overrode, highest first.
    pub overridden: Vec<EnvSource>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvSource {
    /// platform | binding | shared | service | run
    pub layer: String,
    pub origin: String,
}

/// A storage bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bucket {
    pub id: String,
    pub name: String,
    pub project_id: Option<String>,
    /// The storage binding's environment, for a bucket made by attach.
    pub environment: Option<String>,
    pub visibility: String,
    pub public: bool,
    pub region: String,
    pub object_count: i64,
    pub size_bytes: i64,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    /// The bucket's own S3 key pair: in the answer to its create, and from
    /// `GET /storage/buckets/{id}/credentials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<BucketCredentials>,
}

/// A bucket's own S3 key pair, which opens that bucket only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketCredentials {
    pub bucket: String,
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// `POST /storage/buckets`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBucket {
    pub name: Option<String>,
    /// With a project, the bucket is that environment's storage service.
    pub project_id: Option<String>,
    pub environment: Option<String>,
    pub visibility: Option<String>,
    pub public: Option<bool>,
    pub region: Option<String>,
}

/// `PATCH /storage/buckets/{id}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBucket {
    pub visibility: Option<String>,
    pub public: Option<bool>,
}

/// An object in a listing, or the result of a put.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageObject {
    pub key: String,
    pub size: i64,
    pub content_type: String,
    pub etag: String,
    #[serde(serialize_with = "time::serialize")]
    pub last_modified: Timestamp,
}

/// `GET /storage/buckets/{id}/objects`
#[derive(Debug, Serialize, Deserialize)]
pub struct ObjectList {
    pub data: Vec<StorageObject>,
    pub prefix: String,
    pub max_keys: i64,
    pub is_truncated: bool,
    /// Pass as `marker` for the next page.
    pub next_marker: Option<String>,
}

/// `POST /storage/buckets/{id}/presign`
#[derive(Debug, Deserialize)]
pub struct PresignRequest {
    pub key: Option<String>,
    pub method: Option<String>,
    pub operation: Option<String>,
    pub expires_in: Option<i64>,
    pub expires_in_sec: Option<i64>,
    pub content_type: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Presigned {
    pub url: String,
    pub presigned_url: String,
    pub method: String,
    pub key: String,
    #[serde(serialize_with = "time::serialize")]
    pub expires_at: Timestamp,
    pub expires_in: i64,
}
