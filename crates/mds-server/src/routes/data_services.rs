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
use mds_api_types::services::{DatabaseLogLine, DatabaseLogs};
use mds_api_types::{
    CreateDataService, CreateDatabase, Credentials, DataService, UpdateDataService,
};
use mds_control::attach::{
    self, attach, kind_of, load_service, remove_service, wait_settled, KindOptions,
};
use mds_control::pools::{self, set_pool, PoolRequest};
use mds_control::projects::{load_project, project_id_of, resolve_environment, service_project};
use mds_control::standalone;
use mds_core::kinds::{BindingState, Desired, ServiceKind};
use mds_provision::binding_state;
use mds_store::{BindingRow, DataServiceRow, ProjectRow};
use serde::Deserialize;

use super::{data, deleted};
use crate::audit::revealed;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_bool, JsonBody, PathParams, QueryParams};
use crate::state::AppState;
use crate::views::{fill_pools, service_view};

async fn view(
    state: &AppState,
    principal: &Principal,
    service: &DataServiceRow,
) -> ApiResult<DataService> {
    let bindings = state.store()?.bindings(&service.id).await?;
    let mut view = service_view(&principal.tenant_id, service, &bindings);
    fill_pools(state, &mut [(&bindings, &mut view)]).await;
    Ok(view)
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
    let kind = match (&body.kind, &body.existing) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "type",
                "does not go with \"existing\": the database keeps its own",
            ))
        }
        (Some(kind), None) => kind_of(kind)?,
        // Attaching an existing one: its kind is its own.
        (None, Some(_)) => ServiceKind::Postgres,
        (None, None) => return Err(ApiError::missing_field("type")),
    };
    let wait = parse_bool("wait", query.wait.as_deref())?;
    attach_to(&state, &principal, &project, kind, body, wait).await
}

/// Attaches to the caller's project `project` (with Redis's settings and
/// an engine version, refused for kinds without them), or attaches the
/// standalone service `existing` to it; answers 201, once settled if asked.
async fn attach_to(
    state: &AppState,
    principal: &Principal,
    project: &str,
    kind: ServiceKind,
    body: CreateDataService,
    wait: bool,
) -> ApiResult<Response> {
    let project = load_project(state.store()?, principal, project).await?;
    let environment = body.environment.as_deref();
    if let Some(existing) = &body.existing {
        // It is attached as it is: nothing else may be asked of it.
        let asked = [
            ("name", body.name.is_some()),
            ("maxmemory", body.maxmemory.is_some()),
            ("eviction", body.eviction.is_some()),
            ("engine_version", body.engine_version.is_some()),
            ("pool_mode", body.pool_mode.is_some()),
            ("pool_size", body.pool_size.is_some()),
            ("pool_max_clients", body.pool_max_clients.is_some()),
        ];
        if let Some((field, _)) = asked.iter().find(|(_, given)| *given) {
            return Err(ApiError::invalid_field(
                field,
                "does not go with \"existing\", which attaches a database as it is",
            ));
        }
        let service = load_service(state.control(), principal, existing).await?;
        let adopted = standalone::adopt(state.control(), &service, &project, environment).await?;
        return created(state, principal, &adopted, wait).await;
    }
    let options = kind_options(&body);
    let service = attach(
        state.control(),
        &project,
        kind,
        body.name,
        environment,
        &options,
    )
    .await?;
    created(state, principal, &service, wait).await
}

/// The engine settings a create asks for.
fn kind_options(body: &CreateDataService) -> KindOptions {
    KindOptions {
        maxmemory: body.maxmemory.clone(),
        eviction: body.eviction.clone(),
        engine_version: body.engine_version.clone(),
        pool: PoolRequest {
            mode: body.pool_mode.clone(),
            size: body.pool_size.map(Some),
            max_clients: body.pool_max_clients.map(Some),
        },
        ..KindOptions::default()
    }
}

/// The answer to an attach: 201 with the service, once settled if asked.
async fn created(
    state: &AppState,
    principal: &Principal,
    service: &DataServiceRow,
    wait: bool,
) -> ApiResult<Response> {
    if wait {
        wait_settled(state.control(), &service.id).await?;
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
    let mut rows = Vec::with_capacity(services.len());
    let mut views = Vec::with_capacity(services.len());
    for service in &services {
        let bindings = state.store()?.bindings(&service.id).await?;
        views.push(service_view(&principal.tenant_id, service, &bindings));
        rows.push(bindings);
    }
    // The pooler's numbers once for the whole list.
    let mut pairs: Vec<_> = rows
        .iter()
        .map(Vec::as_slice)
        .zip(views.iter_mut())
        .collect();
    fill_pools(state, &mut pairs).await;
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

/// Changes how a Postgres service's clients are pooled: in one
/// environment, or (without `environment`) in every one and for those
/// made later. The mode picks `DATABASE_URL` at the next boot; the size
/// applies to the pooler now.
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<UpdateDataService>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let project = load_project(state.store()?, &principal, &project).await?;
    let service = service_in_project(&state, &project, &id).await?;
    let number = |field: &str, value: Option<serde_json::Value>| {
        value
            .map(|value| pools::size_from_json(field, &value))
            .transpose()
    };
    let request = PoolRequest {
        mode: body.pool_mode,
        size: number("pool_size", body.pool_size)?,
        max_clients: number("pool_max_clients", body.pool_max_clients)?,
    };
    request.require_some()?;
    let environment = match &body.environment {
        Some(reference) => {
            Some(resolve_environment(state.store()?, &project, Some(reference)).await?)
        }
        None => None,
    };
    set_pool(state.control(), &service, environment.as_ref(), &request).await?;
    Ok(data(
        StatusCode::OK,
        view(&state, &principal, &service).await?,
    ))
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
    remove_service(state.control(), &service).await?;
    Ok(deleted(&service.id))
}

/// Asks for a service's data to be deleted in every environment (the one
/// path behind every delete route).
// -------------------------------------------------------- MIOSA /databases

#[derive(Deserialize)]
pub struct DatabaseListQuery {
    project_id: Option<String>,
}

/// A database in a project environment, or, without a project, a
/// standalone one (attach it to a project later).
pub async fn db_create(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<WaitQuery>,
    JsonBody(body): JsonBody<CreateDatabase>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let engine = body.engine.unwrap_or_else(|| "postgresql".to_string());
    let kind = kind_of(&engine)
        .ok()
        .filter(|k| matches!(k, ServiceKind::Postgres | ServiceKind::Redis))
        .ok_or_else(|| {
            ApiError::invalid_field(
                "engine",
                format!("engine {engine:?} is not available here; use postgresql or redis"),
            )
        })?;
    let wait = parse_bool("wait", query.wait.as_deref())?;
    let project = body.project_id.or(query.project_id);
    let attach_body = CreateDataService {
        kind: None,
        name: body.name,
        environment: body.environment,
        maxmemory: body.maxmemory,
        eviction: body.eviction,
        engine_version: body.engine_version,
        existing: None,
        pool_mode: None,
        pool_size: None,
        pool_max_clients: None,
    };
    if let Some(project) = project {
        return attach_to(&state, &principal, &project, kind, attach_body, wait).await;
    }
    if attach_body.environment.is_some() {
        return Err(ApiError::invalid_field(
            "environment",
            "names an environment of a project: give project_id as well, or leave both out \
             for a standalone database",
        ));
    }
    let options = kind_options(&attach_body);
    let service = standalone::create(
        state.control(),
        &principal,
        kind,
        attach_body.name,
        &options,
    )
    .await?;
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
    let all_kinds: Vec<&str> = ServiceKind::ALL.iter().map(|k| k.as_str()).collect();
    let services = store
        .tenant_data_services(&principal.tenant_id, &all_kinds, project_id.as_deref())
        .await?;
    views(&state, &principal, services).await
}

pub async fn db_get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let service = load_service(state.control(), &principal, &id).await?;
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
    let service = load_service(state.control(), &principal, &id).await?;
    remove_service(state.control(), &service).await?;
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
    let project = service_project(store, principal, service).await?;
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
    let service = load_service(state.control(), &principal, &id).await?;
    let environment = query.environment.as_deref().or(query.env.as_deref());
    let binding = pick_binding(&state, &principal, &service, environment).await?;
    let current = binding_state(&binding);
    if !matches!(current, Ok(BindingState::Running)) {
        // Being made, or coming back after a restart: soon.
        let retryable = matches!(
            current,
            Ok(BindingState::Provisioning | BindingState::Starting)
        );
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
    let project_id = service.project_id.clone();
    let names = vars
        .iter()
        .map(|(name, _, _)| name.clone())
        .collect::<Vec<String>>();
    // The role the current credentials log in as (it changes with each
    // rotation; the database keeps its name).
    let login = mds_core::names::login_role(&binding.resource_name, binding.credential_generation);
    let response = data(
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
            username: login.clone(),
            user: login,
            password: password.to_string(),
            env: vars.into_iter().map(|(k, v, _)| (k, v)).collect(),
        },
    );
    Ok(revealed(response, Some(&project_id), names))
}

async fn set_desired(
    state: &AppState,
    principal: &Principal,
    id: &str,
    desired: Desired,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let service = load_service(state.control(), principal, id).await?;
    attach::set_desired(state.control(), &service, desired).await?;
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
    set_desired(&state, &principal, &id, Desired::Running).await
}

pub async fn db_stop(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    set_desired(&state, &principal, &id, Desired::Stopped).await
}

/// Ends every session of the database's roles; data and credentials stay.
pub async fn db_restart(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let service = load_service(state.control(), &principal, &id).await?;
    attach::restart(state.control(), &service, None).await?;
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
    let service = load_service(state.control(), &principal, &id).await?;
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
    let logs = events
        .into_iter()
        .map(|(t, stream, line)| DatabaseLogLine { line, stream, t })
        .collect();
    Ok(data(
        StatusCode::OK,
        DatabaseLogs {
            database_id: service.id,
            logs,
        },
    ))
}
