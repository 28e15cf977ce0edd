//! MIOSA project services (`/projects/{p}/services`, `/services/{id}`) of
//! kind `database`: the same data services, in the shape the SDK's
//! `client.services` reads, with per-environment variables that may hold
//! references (`${{Postgres.DATABASE_URL}}`, `${{shared.NAME}}`,
//! `${{NAME}}`, `${{secret(32)}}`). Other kinds are deployments' work.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::services::{
    EffectiveVariable, EffectiveVariables, ProjectService, RevealedVariable, ServiceConnection,
    ServiceSettings,
};
use mds_api_types::SetVariables;
use mds_control::attach::{attach, remove_service, KindOptions};
use mds_control::projects::{load_project, resolve_environment};
use mds_control::references::{draw_secrets, resolved_exposed};
use mds_control::variables;
use mds_core::kinds::ServiceKind;
use mds_core::vars;
use mds_store::{DataServiceRow, EnvironmentRow, ProjectRow, VariableScope};
use serde::Deserialize;
use serde_json::Value;

use super::{data, deleted, list_all};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{EnvQuery, JsonBody, PathParams, QueryParams};
use crate::state::AppState;
use crate::views::{service_view, variable_views};

#[derive(Deserialize, Default)]
pub struct CreateService {
    name: Option<String>,
    kind: Option<String>,
    #[serde(rename = "type")]
    service_type: Option<String>,
    settings: Option<Value>,
    env: Option<String>,
    environment: Option<String>,
}

async fn service_json(
    state: &AppState,
    principal: &Principal,
    service: &DataServiceRow,
) -> ApiResult<ProjectService> {
    let bindings = state.store()?.bindings(&service.id).await?;
    let view = service_view(&principal.tenant_id, service, &bindings);
    Ok(ProjectService {
        id: service.id.clone(),
        project_id: service.project_id.clone(),
        tenant_id: principal.tenant_id.clone(),
        name: service.name.clone(),
        slug: mds_core::names::slugify(&service.name).unwrap_or_default(),
        kind: "database".to_string(),
        service_type: "database".to_string(),
        engine: view.engine,
        state: view.state,
        environment_id: service.environment_id.clone(),
        settings: ServiceSettings {
            engine: service.kind.clone(),
            engine_version: view.engine_version,
        },
        env_prefix: service.env_prefix.clone(),
        lock_version: 0,
        bindings: view.bindings,
        created_at: service.created_at,
        updated_at: service.updated_at,
    })
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
    JsonBody(body): JsonBody<CreateService>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let kind = body
        .kind
        .or(body.service_type)
        .unwrap_or_else(|| "server".to_string());
    if kind != "database" {
        return Err(ApiError::invalid_field(
            "kind",
            format!("services of kind {kind:?} are not available yet; kind \"database\" is"),
        ));
    }
    let engine = body
        .settings
        .as_ref()
        .and_then(|s| s.get("engine"))
        .and_then(Value::as_str)
        .unwrap_or("postgres");
    let kind = match engine {
        "postgres" | "postgresql" => ServiceKind::Postgres,
        other => {
            return Err(ApiError::invalid_field(
                "settings.engine",
                format!("engine {other:?} is not available; use postgres"),
            ))
        }
    };
    let name = body.name.ok_or_else(|| ApiError::missing_field("name"))?;
    let environment = query
        .environment()
        .map(str::to_string)
        .or(body.env)
        .or(body.environment);
    let project = load_project(state.store()?, &principal, &project).await?;
    let service = attach(
        state.control(),
        &project,
        kind,
        Some(name),
        environment.as_deref(),
        &KindOptions::default(),
    )
    .await?;
    Ok(data(
        StatusCode::CREATED,
        service_json(&state, &principal, &service).await?,
    ))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let store = state.store()?;
    let project = load_project(store, &principal, &project).await?;
    let env = match query.environment() {
        Some(reference) => Some(resolve_environment(store, &project, Some(reference)).await?),
        None => None,
    };
    let mut rows = Vec::new();
    for service in store.data_services(&project.id).await? {
        let in_env = match (&env, &service.environment_id) {
            (Some(env), Some(scope)) => &env.id == scope,
            _ => true,
        };
        if in_env {
            rows.push(service_json(&state, &principal, &service).await?);
        }
    }
    Ok(super::list_all(rows))
}

/// The caller's service `id` with its project.
async fn load(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<(DataServiceRow, std::sync::Arc<ProjectRow>)> {
    let store = state.store()?;
    let service = store
        .data_service(&principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("service", id))?;
    let project = load_project(store, principal, &service.project_id).await?;
    Ok((service, project))
}

/// `?env=`, else the service's own environment, else the default.
async fn environment(
    state: &AppState,
    project: &ProjectRow,
    service: &DataServiceRow,
    query: &EnvQuery,
) -> ApiResult<EnvironmentRow> {
    let reference = query.environment().or(service.environment_id.as_deref());
    Ok(resolve_environment(state.store()?, project, reference).await?)
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let (service, _) = load(&state, &principal, &id).await?;
    Ok(data(
        StatusCode::OK,
        service_json(&state, &principal, &service).await?,
    ))
}

/// The SDK's delete of one service: the call itself is the explicit act.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let (service, _) = load(&state, &principal, &id).await?;
    remove_service(state.control(), &service).await?;
    Ok(deleted(&service.id))
}

pub async fn variables(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:read")?;
    let (service, project) = load(&state, &principal, &id).await?;
    let env = environment(&state, &project, &service, &query).await?;
    let scope = VariableScope::Service {
        service_id: &service.id,
        environment_id: &env.id,
    };
    Ok(list_all(variable_views(&state, scope, &env, false).await?))
}

pub async fn set_variables(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
    JsonBody(body): JsonBody<SetVariables>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let mut entries = variables::entries(body.variables)?;
    for entry in entries.iter_mut() {
        entry.value = draw_secrets(&entry.value)
            .map_err(|e| ApiError::invalid_field("variables", format!("{}: {e}", entry.name)))?;
    }
    let (service, project) = load(&state, &principal, &id).await?;
    let target = query
        .environment()
        .map(str::to_string)
        .or(body.env)
        .or(body.environment);
    let env = resolve_environment(
        state.store()?,
        &project,
        target.as_deref().or(service.environment_id.as_deref()),
    )
    .await?;
    let scope = VariableScope::Service {
        service_id: &service.id,
        environment_id: &env.id,
    };
    state.write_variables(&principal, scope, entries).await?;
    Ok(list_all(variable_views(&state, scope, &env, false).await?))
}

pub async fn delete_variables(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((id, names)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let (service, project) = load(&state, &principal, &id).await?;
    let env = environment(&state, &project, &service, &query).await?;
    let scope = VariableScope::Service {
        service_id: &service.id,
        environment_id: &env.id,
    };
    let store = state.store()?;
    for name in names.split(',').filter(|n| !n.is_empty()) {
        store.delete_variable(scope, name).await?;
    }
    Ok(deleted(&names))
}

/// Every variable a boot of this service would receive, references
/// resolved; values only through reveal.
pub async fn effective(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:read")?;
    let (service, project) = load(&state, &principal, &id).await?;
    let env = environment(&state, &project, &service, &query).await?;
    let variables = resolved_exposed(state.control(), &project, &service, &env)
        .await?
        .into_iter()
        .map(|v| EffectiveVariable {
            preview: vars::preview(&v.value, v.secret),
            name: v.name,
            is_secret: v.secret,
            source: v.origin,
        })
        .collect();
    Ok(data(
        StatusCode::OK,
        EffectiveVariables {
            service_id: service.id,
            environment: env.name,
            variables,
        },
    ))
}

pub async fn reveal(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((id, name)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:reveal")?;
    let (service, project) = load(&state, &principal, &id).await?;
    let env = environment(&state, &project, &service, &query).await?;
    let var = resolved_exposed(state.control(), &project, &service, &env)
        .await?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| ApiError::not_found("variable", &name))?;
    tracing::info!(key = %principal.key_id, service = service.id, variable = name, "service variable revealed");
    Ok(data(
        StatusCode::OK,
        RevealedVariable {
            name: var.name,
            value: var.value,
            source: var.origin,
            environment: env.name,
        },
    ))
}

/// A database service's connection (it holds a password).
pub async fn connection(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:reveal")?;
    let (service, project) = load(&state, &principal, &id).await?;
    let env = environment(&state, &project, &service, &query).await?;
    let vars = resolved_exposed(state.control(), &project, &service, &env).await?;
    let get = |n: &str| vars.iter().find(|v| v.name == n).map(|v| v.value.clone());
    let Some(url) = get("DATABASE_URL") else {
        return Err(ApiError::conflict(
            "DATABASE_NOT_RUNNING",
            format!(
                "{} has no running database in {} yet",
                service.name, env.name
            ),
        )
        .retry_after(std::time::Duration::from_secs(1)));
    };
    Ok(data(
        StatusCode::OK,
        ServiceConnection {
            service_id: service.id,
            environment: env.name,
            private_url: url.clone(),
            url,
            public_url: None,
            host: get("PGHOST"),
            port: get("PGPORT").and_then(|p| p.parse::<u16>().ok()),
            database: get("PGDATABASE"),
            username: get("PGUSER"),
            password: get("PGPASSWORD"),
        },
    ))
}
