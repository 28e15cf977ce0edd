//! Data services: one internal model behind the native routes
//! (`/projects/{p}/data-services`) and the MIOSA `/databases` family.
//!
//! Attaching writes the desired state (the service and a binding per
//! environment) in one transaction and wakes the reconciler; the bindings
//! turn `running` once a real login with their own credentials works.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::{Binding, CreateDataService, CreateDatabase, Credentials, DataService};
use mds_core::ids::IdKind;
use mds_core::names;
use mds_store::{BindingRow, DataServiceRow, NewDataService, ProjectRow, StoreError};
use serde::Deserialize;
use serde_json::json;

use super::environments::resolve_environment;
use super::projects::{load_project, project_id_of};
use super::{data, deleted};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_bool, JsonBody, PathParams, QueryParams};
use crate::state::AppState;

/// Kinds that can be attached today.
const KINDS: &[&str] = &["postgres", "redis", "storage", "auth", "volume"];
const WAIT_LIMIT: Duration = Duration::from_secs(60);

pub fn binding_view(row: &BindingRow) -> Binding {
    Binding {
        id: row.id.clone(),
        environment: row.environment_name.clone(),
        environment_id: row.environment_id.clone(),
        state: row.state.clone(),
        desired: row.desired.clone(),
        last_error: row.last_error.clone(),
        resource: row.resource_name.clone(),
        ready_at: row.ready_at,
    }
}

/// One state for the whole service, from its bindings'.
fn aggregate_state(service: &DataServiceRow, bindings: &[BindingRow]) -> &'static str {
    if service.deleting {
        "deleting"
    } else if bindings.iter().any(|b| b.state == "error") {
        "error"
    } else if bindings.is_empty() || bindings.iter().any(|b| b.state != b.desired) {
        "provisioning"
    } else if bindings.iter().all(|b| b.state == "stopped") {
        "stopped"
    } else {
        "running"
    }
}

pub fn service_view(
    tenant_id: &str,
    service: &DataServiceRow,
    bindings: &[BindingRow],
) -> DataService {
    let state = aggregate_state(service, bindings);
    DataService {
        id: service.id.clone(),
        project_id: service.project_id.clone(),
        tenant_id: tenant_id.to_string(),
        kind: service.kind.clone(),
        name: service.name.clone(),
        env_prefix: service.env_prefix.clone(),
        environment_id: service.environment_id.clone(),
        state: state.to_string(),
        bindings: bindings.iter().map(binding_view).collect(),
        engine: match service.kind.as_str() {
            "postgres" => "postgresql".to_string(),
            "storage" => "s3".to_string(),
            other => other.to_string(),
        },
        engine_version: service.config["engine_version"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        region: "local".to_string(),
        connection_test: (state == "running").then(|| json!({ "status": "ok" })),
        created_at: service.created_at,
        updated_at: service.updated_at,
    }
}

async fn view(
    state: &AppState,
    principal: &Principal,
    service: &DataServiceRow,
) -> ApiResult<DataService> {
    let bindings = state.store()?.bindings(&service.id).await?;
    Ok(service_view(&principal.tenant_id, service, &bindings))
}

/// Attaches a data service of `kind` to `project`: the one path every API
/// takes.
pub async fn attach(
    state: &AppState,
    project: &ProjectRow,
    kind: &str,
    name: Option<String>,
    environment: Option<&str>,
    options: &KindOptions,
) -> ApiResult<DataServiceRow> {
    let config = kind_config(state, kind, options)?;
    let store = state.store()?;
    let reconciler = state.reconciler()?;
    if let Some(name) = &name {
        names::validate_service_name("name", name)?;
    }
    let scope = match environment {
        Some(reference) => Some(resolve_environment(store, project, Some(reference)).await?),
        None => None,
    };
    let existing = store.data_services(&project.id).await?;
    let first_of_kind = !existing.iter().any(|s| s.kind == kind);
    if kind == "auth" && !first_of_kind {
        return Err(ApiError::conflict(
            "AUTH_ALREADY_ENABLED",
            "this project already has auth (one per project, with users per environment); \
             change its settings with PATCH /projects/{id}/auth",
        ));
    }
    let (name, env_prefix) = match (name, first_of_kind) {
        (name, true) => (name.unwrap_or_else(|| kind.to_string()), String::new()),
        (Some(name), false) => {
            let prefix = names::env_prefix(&name);
            (name, prefix)
        }
        (None, false) => {
            return Err(ApiError::conflict(
                "DATA_SERVICE_NAME_REQUIRED",
                format!(
                    "this project already has a {kind} service, which injects the standard \
                     names; give this one a name (for example \"analytics\") and it injects \
                     prefixed ones (ANALYTICS_...)"
                ),
            )
            .with_details(json!({ "field": "name" })))
        }
    };
    let environments: Vec<_> = match &scope {
        Some(env) => vec![env.clone()],
        None => project.environments.clone(),
    };
    let service_part = (!env_prefix.is_empty()).then_some(name.as_str());
    let bindings: Vec<_> = environments
        .iter()
        .map(|env| reconciler.new_binding(&project.slug, &env.id, &env.slug, service_part))
        .collect();
    let new = NewDataService {
        id: IdKind::DataService.mint(),
        project_id: project.id.clone(),
        kind: kind.to_string(),
        name: name.clone(),
        env_prefix,
        environment_id: scope.map(|e| e.id),
        config,
    };
    let row = match store.create_data_service(&new, &bindings).await {
        Ok(row) => row,
        Err(StoreError::Conflict { constraint }) => {
            let (code, message) = match constraint.as_str() {
                "data_services_name_key" => (
                    "DATA_SERVICE_NAME_TAKEN",
                    format!("this project already has a data service named {name:?}"),
                ),
                "data_services_prefix_key" => (
                    "DATA_SERVICE_NAME_TAKEN",
                    format!("another {kind} service of this project injects the same names"),
                ),
                _ => (
                    "CONFLICT",
                    "the engine-side name is taken; retry".to_string(),
                ),
            };
            return Err(ApiError::conflict(code, message).with_details(json!({ "field": "name" })));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(
        service = row.id,
        project = project.id,
        kind,
        "attached a data service"
    );
    reconciler.wake();
    Ok(row)
}

/// Waits until every binding settles: reaches its desired state, or keeps
/// failing (a first error is often a race that the retry clears).
pub(super) async fn wait_settled(state: &AppState, service_id: &str) -> ApiResult<()> {
    let store = state.store()?;
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        let bindings = store.bindings(service_id).await?;
        if bindings
            .iter()
            .all(|b| b.state == b.desired || b.state == "error")
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The caller's service `id`, or 404.
async fn load_service(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<DataServiceRow> {
    state
        .store()?
        .data_service(&principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("data service", id))
}

/// Settings some kinds take at attach.
#[derive(Default)]
pub struct KindOptions {
    pub maxmemory: Option<String>,
    pub eviction: Option<String>,
    /// Auth settings (`allow_signups`, `token_expiry_sec`, ...).
    pub auth: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A service's engine settings, validated (each bad one names its field).
fn kind_config(
    state: &AppState,
    kind: &str,
    options: &KindOptions,
) -> ApiResult<serde_json::Value> {
    match kind {
        "redis" => {
            let maxmemory = match &options.maxmemory {
                None => mds_provision::DEFAULT_REDIS_MEMORY,
                Some(text) => mds_engines::parse_memory(text).ok_or_else(|| {
                    ApiError::invalid_field(
                        "maxmemory",
                        format!("{text:?} is not a size of at least 1mb (like 256mb or 1gb)"),
                    )
                })?,
            };
            let eviction = options.eviction.as_deref().unwrap_or("noeviction");
            if !mds_engines::EVICTION_POLICIES.contains(&eviction) {
                return Err(ApiError::invalid_field(
                    "eviction",
                    format!(
                        "{eviction:?} is not an eviction policy; use one of {}",
                        mds_engines::EVICTION_POLICIES.join(", ")
                    ),
                ));
            }
            Ok(json!({ "maxmemory_bytes": maxmemory, "eviction": eviction, "engine_version": "7" }))
        }
        _ => {
            for (field, given) in [
                ("maxmemory", &options.maxmemory),
                ("eviction", &options.eviction),
            ] {
                if given.is_some() {
                    return Err(ApiError::invalid_field(
                        field,
                        format!("applies to redis, not {kind}"),
                    ));
                }
            }
            Ok(match kind {
                "storage" | "volume" => json!({}),
                "auth" => {
                    let mut config = mds_auth::AuthConfig::default();
                    if let Some(patch) = &options.auth {
                        config
                            .apply(patch)
                            .map_err(|e| ApiError::invalid_field(&e.field, e.message))?;
                    }
                    config.to_stored()
                }
                _ => json!({ "engine_version": state.engine_version() }),
            })
        }
    }
}

fn kind_of(raw: &str) -> ApiResult<&'static str> {
    match raw.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" | "pg" => Ok("postgres"),
        "redis" => Ok("redis"),
        "storage" | "s3" | "bucket" => Ok("storage"),
        "auth" => Ok("auth"),
        "volume" | "volumes" => Ok("volume"),
        "mysql" | "mongodb" => Err(ApiError::invalid_field(
            "type",
            format!(
                "{raw:?} cannot be attached yet; available: {}",
                KINDS.join(", ")
            ),
        )),
        _ => Err(ApiError::invalid_field(
            "type",
            format!(
                "unknown data-service type {raw:?}; available: {}",
                KINDS.join(", ")
            ),
        )),
    }
}

#[derive(Deserialize)]
pub struct WaitQuery {
    wait: Option<String>,
    confirm: Option<String>,
    environment: Option<String>,
    env: Option<String>,
    project_id: Option<String>,
}

// ----------------------------------------------------------- native routes

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<WaitQuery>,
    JsonBody(body): JsonBody<CreateDataService>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let kind = kind_of(&body.kind.ok_or_else(|| ApiError::missing_field("type"))?)?;
    let wait = parse_bool("wait", query.wait.as_deref())?;
    let project = load_project(state.store()?, &principal, &project).await?;
    let options = KindOptions {
        maxmemory: body.maxmemory,
        eviction: body.eviction,
        ..KindOptions::default()
    };
    let environment = body.environment.as_deref();
    let service = attach(&state, &project, kind, body.name, environment, &options).await?;
    created(&state, &principal, &service, wait).await
}

/// The answer to an attach: 201 with the service, once settled if asked.
async fn created(
    state: &AppState,
    principal: &Principal,
    service: &DataServiceRow,
    wait: bool,
) -> ApiResult<Response> {
    if wait {
        wait_settled(state, &service.id).await?;
    }
    Ok(data(
        StatusCode::CREATED,
        view(state, principal, service).await?,
    ))
}

/// A list answer of services with their bindings.
async fn views(
    state: &AppState,
    principal: &Principal,
    services: Vec<DataServiceRow>,
) -> ApiResult<Response> {
    let mut views = Vec::with_capacity(services.len());
    for service in &services {
        views.push(view(state, principal, service).await?);
    }
    Ok(super::list_all(views))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let store = state.store()?;
    let project = load_project(store, &principal, &project).await?;
    let services = store.data_services(&project.id).await?;
    views(&state, &principal, services).await
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, id)): PathParams<(String, String)>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let project = load_project(state.store()?, &principal, &project).await?;
    let service = service_in_project(&state, &project, &id).await?;
    Ok(data(
        StatusCode::OK,
        view(&state, &principal, &service).await?,
    ))
}

/// A service of `project` by id or name.
async fn service_in_project(
    state: &AppState,
    project: &ProjectRow,
    reference: &str,
) -> ApiResult<DataServiceRow> {
    let services = state.store()?.data_services(&project.id).await?;
    services
        .into_iter()
        .find(|s| s.id == reference || s.name == reference)
        .ok_or_else(|| ApiError::not_found("data service", reference))
}

/// Deleting drops every binding's database: it needs `?confirm=<name>`.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<WaitQuery>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let project = load_project(state.store()?, &principal, &project).await?;
    let service = service_in_project(&state, &project, &id).await?;
    if query.confirm.as_deref() != Some(service.name.as_str())
        && query.confirm.as_deref() != Some(service.id.as_str())
    {
        return Err(ApiError::conflict(
            "CONFIRMATION_REQUIRED",
            format!(
                "deleting {:?} drops its data in every environment; repeat with ?confirm={}",
                service.name, service.name
            ),
        ));
    }
    remove_service(&state, &service).await?;
    Ok(deleted(&service.id))
}

/// Asks for a service's data to be deleted in every environment (the one
/// path behind every delete route).
pub async fn remove_service(state: &AppState, service: &DataServiceRow) -> ApiResult<()> {
    state
        .store()?
        .set_service_desired(&service.id, "deleted")
        .await?;
    tracing::info!(service = service.id, "deleting a data service, as asked");
    state.reconciler()?.wake();
    Ok(())
}

// -------------------------------------------------------- MIOSA /databases

#[derive(Deserialize)]
pub struct DatabaseListQuery {
    project_id: Option<String>,
}

pub async fn db_create(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<WaitQuery>,
    JsonBody(body): JsonBody<CreateDatabase>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let engine = body.engine.unwrap_or_else(|| "postgresql".to_string());
    let kind = kind_of(&engine).map_err(|_| {
        ApiError::invalid_field(
            "engine",
            format!("engine {engine:?} is not available here; use postgresql or redis"),
        )
    })?;
    let project_ref = body
        .project_id
        .or(query.project_id)
        .ok_or_else(|| ApiError::missing_field("project_id"))?;
    let project = load_project(state.store()?, &principal, &project_ref).await?;
    let options = KindOptions {
        maxmemory: body.maxmemory,
        eviction: body.eviction,
        ..KindOptions::default()
    };
    let environment = body.environment.as_deref();
    let service = attach(&state, &project, kind, body.name, environment, &options).await?;
    let wait = parse_bool("wait", query.wait.as_deref())?;
    created(&state, &principal, &service, wait).await
}

pub async fn db_list(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<DatabaseListQuery>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let store = state.store()?;
    let project_id = project_id_of(store, &principal, query.project_id.as_deref()).await?;
    let services = store
        .tenant_data_services(&principal.tenant_id, KINDS, project_id.as_deref())
        .await?;
    views(&state, &principal, services).await
}

pub async fn db_get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let service = load_service(&state, &principal, &id).await?;
    Ok(data(
        StatusCode::OK,
        view(&state, &principal, &service).await?,
    ))
}

/// The MIOSA delete of one database: the call itself is the explicit act.
pub async fn db_delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let service = load_service(&state, &principal, &id).await?;
    remove_service(&state, &service).await?;
    Ok(deleted(&service.id))
}

/// The binding a per-database call means: `?environment=`, else the
/// service's own environment, else the project's default.
async fn pick_binding(
    state: &AppState,
    principal: &Principal,
    service: &DataServiceRow,
    environment: Option<&str>,
) -> ApiResult<BindingRow> {
    let store = state.store()?;
    let project = load_project(store, principal, &service.project_id).await?;
    let env = match (environment, &service.environment_id) {
        (Some(reference), _) => resolve_environment(store, &project, Some(reference)).await?,
        (None, Some(id)) => resolve_environment(store, &project, Some(id)).await?,
        (None, None) => resolve_environment(store, &project, None).await?,
    };
    store
        .bindings(&service.id)
        .await?
        .into_iter()
        .find(|b| b.environment_id == env.id)
        .ok_or_else(|| {
            ApiError::not_found("binding of this data service in environment", &env.name)
        })
}

pub async fn db_credentials(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<WaitQuery>,
) -> ApiResult<Response> {
    principal.require("env:reveal")?;
    let service = load_service(&state, &principal, &id).await?;
    let environment = query.environment.as_deref().or(query.env.as_deref());
    let binding = pick_binding(&state, &principal, &service, environment).await?;
    if binding.state != "running" {
        let retryable = binding.state == "provisioning";
        let mut err = ApiError::conflict(
            "DATABASE_NOT_RUNNING",
            format!(
                "the database in {} is {}{}",
                binding.environment_name,
                binding.state,
                binding
                    .last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        );
        if retryable {
            err = err.retry_after(Duration::from_secs(1));
        }
        return Err(err);
    }
    let reconciler = state.reconciler()?;
    let password = reconciler.password(&binding).map_err(ApiError::internal)?;
    let (host, port) = reconciler.binding_endpoint(&service, &binding);
    let vars = reconciler
        .binding_variables(&service, &binding)
        .map_err(ApiError::internal)?;
    let url = vars[0].1.clone();
    tracing::info!(key = %principal.key_id, service = service.id, environment = binding.environment_name, "credentials revealed");
    Ok(data(
        StatusCode::OK,
        Credentials {
            database_id: service.id.clone(),
            environment: binding.environment_name.clone(),
            database_url: url.clone(),
            connection_string: url.clone(),
            url,
            host,
            port,
            database: binding.resource_name.clone(),
            dbname: binding.resource_name.clone(),
            username: binding.resource_name.clone(),
            user: binding.resource_name.clone(),
            password: password.to_string(),
            env: vars.into_iter().map(|(k, v, _)| (k, v)).collect(),
        },
    ))
}

async fn set_desired(
    state: &AppState,
    principal: &Principal,
    id: &str,
    desired: &str,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let service = load_service(state, principal, id).await?;
    if service.deleting {
        return Err(ApiError::conflict(
            "RESOURCE_STATE",
            "this database is being deleted",
        ));
    }
    state
        .store()?
        .set_service_desired(&service.id, desired)
        .await?;
    state.reconciler()?.wake();
    wait_settled(state, &service.id).await?;
    Ok(data(
        StatusCode::OK,
        view(state, principal, &service).await?,
    ))
}

pub async fn db_start(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    set_desired(&state, &principal, &id, "running").await
}

pub async fn db_stop(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    set_desired(&state, &principal, &id, "stopped").await
}

/// Ends every session of the database's roles; data and credentials stay.
pub async fn db_restart(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let service = load_service(&state, &principal, &id).await?;
    let reconciler = state.reconciler()?;
    for binding in state.store()?.bindings(&service.id).await? {
        reconciler.restart(&service, &binding).await?;
        let _ = state
            .store()?
            .add_binding_event(&binding.id, "lifecycle", "restarted: sessions closed")
            .await;
    }
    Ok(data(
        StatusCode::OK,
        view(&state, &principal, &service).await?,
    ))
}

#[derive(Deserialize)]
pub struct LogsQuery {
    lines: Option<String>,
}

pub async fn db_logs(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<LogsQuery>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let service = load_service(&state, &principal, &id).await?;
    let lines = match query.lines.as_deref() {
        None | Some("") => 100,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_field("lines", "must be a whole number from 1 to 10000")
            })?,
    };
    let events = state.store()?.binding_events(&service.id, lines).await?;
    let logs: Vec<_> = events
        .into_iter()
        .map(|(t, stream, line)| json!({ "t": t, "stream": stream, "line": line }))
        .collect();
    Ok(data(
        StatusCode::OK,
        json!({ "database_id": service.id, "logs": logs }),
    ))
}
