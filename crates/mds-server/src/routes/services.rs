//! MIOSA project services (`/projects/{p}/services`, `/services/{id}`) of
//! kind `database`: the same data services, in the shape the SDK's
//! `client.services` reads, with per-environment variables that may hold
//! references (`${{Postgres.DATABASE_URL}}`, `${{shared.NAME}}`,
//! `${{NAME}}`, `${{secret(32)}}`). Other kinds are deployments' work.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::SetVariables;
use mds_core::env::{expand_references, BadReference, Reference};
use mds_core::vars;
use mds_store::{DataServiceRow, EnvironmentRow, ProjectRow, VariableScope};
use serde::Deserialize;
use serde_json::{json, Value};

use super::data_services::{attach, binding_view, remove_service};
use super::environments::resolve_environment;
use super::projects::load_project;
use super::variables::{list_for, open_variable, parse_input, write_variables, EnvQuery};
use super::{data, deleted};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::state::AppState;

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
) -> ApiResult<Value> {
    let bindings = state.store()?.bindings(&service.id).await?;
    let view = super::data_services::service_view(&principal.tenant_id, service, &bindings);
    Ok(json!({
        "id": service.id,
        "project_id": service.project_id,
        "tenant_id": principal.tenant_id,
        "name": service.name,
        "slug": mds_core::names::slugify(&service.name).unwrap_or_default(),
        "kind": "database",
        "type": "database",
        "engine": view.engine,
        "state": view.state,
        "environment_id": service.environment_id,
        "settings": { "engine": service.kind, "engine_version": view.engine_version },
        "env_prefix": service.env_prefix,
        "lock_version": 0,
        "bindings": bindings.iter().map(binding_view).collect::<Vec<_>>(),
        "created_at": service.created_at,
        "updated_at": service.updated_at,
    }))
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
        "postgres" | "postgresql" => "postgres",
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
        &state,
        &project,
        kind,
        Some(name),
        environment.as_deref(),
        &super::data_services::KindOptions::default(),
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
    resolve_environment(state.store()?, project, reference).await
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
    remove_service(&state, &service).await?;
    Ok(deleted(&service.id))
}

/// A variable a data service exposes to references and boots.
#[derive(Clone)]
struct Exposed {
    name: String,
    value: String,
    secret: bool,
    /// "Postgres (binding)" or "Postgres (variable)".
    origin: String,
}

/// What a data service exposes in an environment: its binding's variables
/// (unprefixed: `${{Postgres.DATABASE_URL}}`), then its own variables.
async fn exposed(
    state: &AppState,
    project: &ProjectRow,
    service: &DataServiceRow,
    env: &EnvironmentRow,
    depth: u8,
) -> ApiResult<Vec<Exposed>> {
    let store = state.store()?;
    let mut out = Vec::new();
    if let Some(binding) = store
        .bindings(&service.id)
        .await?
        .into_iter()
        .find(|b| b.environment_id == env.id && b.state == "running")
    {
        let unprefixed = DataServiceRow {
            env_prefix: String::new(),
            ..service.clone()
        };
        for (name, value, secret) in state
            .reconciler()?
            .binding_variables(&unprefixed, &binding)
            .map_err(ApiError::internal)?
        {
            out.push(Exposed {
                name,
                value,
                secret,
                origin: format!("{} (binding)", service.name),
            });
        }
    }
    let scope = VariableScope::Service {
        service_id: &service.id,
        environment_id: &env.id,
    };
    let own: Vec<(String, String, bool)> = store
        .variables(scope)
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.name.clone(),
                open_variable(state, scope, row)?.to_string(),
                row.is_secret,
            ))
        })
        .collect::<ApiResult<_>>()?;
    for (name, raw, secret) in &own {
        let value = if depth == 0 {
            raw.clone()
        } else {
            expand(state, project, env, raw, &own, depth - 1).await?
        };
        out.push(Exposed {
            name: name.clone(),
            value,
            secret: *secret,
            origin: format!("{} (variable)", service.name),
        });
    }
    Ok(out)
}

/// Resolves the references in `raw`; unknown targets resolve to "".
async fn expand(
    state: &AppState,
    project: &ProjectRow,
    env: &EnvironmentRow,
    raw: &str,
    own: &[(String, String, bool)],
    depth: u8,
) -> ApiResult<String> {
    if !raw.contains("${{") {
        return Ok(raw.to_string());
    }
    // Gather what the references need first (lookups are async), then
    // substitute with the pure expander.
    let mut wanted_services = Vec::new();
    let _ = expand_references(raw, |r| {
        if let Reference::Service(name, _) = r {
            wanted_services.push(name.to_string());
        }
        Ok(String::new())
    });
    let store = state.store()?;
    let services = store.data_services(&project.id).await?;
    let mut exposed_by: Vec<(String, Vec<Exposed>)> = Vec::new();
    for wanted in wanted_services {
        if let Some(target) = services
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(&wanted) || s.id == wanted)
        {
            let vars = Box::pin(exposed(state, project, target, env, depth)).await?;
            exposed_by.push((wanted, vars));
        }
    }
    let shared_scope = VariableScope::Shared {
        environment_id: &env.id,
    };
    let shared: Vec<(String, String)> = store
        .variables(shared_scope)
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.name.clone(),
                open_variable(state, shared_scope, row)?.to_string(),
            ))
        })
        .collect::<ApiResult<_>>()?;
    expand_references(raw, |r| {
        Ok(match r {
            Reference::Shared(name) => shared
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            Reference::Service(service, name) => exposed_by
                .iter()
                .find(|(s, _)| s == service)
                .and_then(|(_, vars)| vars.iter().find(|v| v.name == *name))
                .map(|v| v.value.clone())
                .unwrap_or_default(),
            Reference::Own(name) => own
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, v, _)| v.clone())
                .unwrap_or_default(),
            Reference::Secret(_) => String::new(),
        })
    })
    .map_err(|e| ApiError::invalid_field("variables", e.to_string()))
}

/// Draws each `${{secret(N)}}` now (it is stored as drawn) and checks the
/// shape of every other reference, which stays for boot time.
fn draw_secrets(value: &str) -> Result<String, BadReference> {
    expand_references(value, |r| {
        Ok(match r {
            Reference::Secret(n) => mds_crypto::random_password(*n).to_string(),
            Reference::Shared(name) => format!("${{{{shared.{name}}}}}"),
            Reference::Service(service, name) => format!("${{{{{service}.{name}}}}}"),
            Reference::Own(name) => format!("${{{{{name}}}}}"),
        })
    })
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
    list_for(&state, scope, &env, false).await
}

pub async fn set_variables(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
    JsonBody(body): JsonBody<SetVariables>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let mut entries = parse_input(body.variables)?;
    for (name, value, _) in entries.iter_mut() {
        *value = draw_secrets(value)
            .map_err(|e| ApiError::invalid_field("variables", format!("{name}: {e}")))?;
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
    write_variables(&state, &principal, scope, entries).await?;
    list_for(&state, scope, &env, false).await
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
    let vars_out: Vec<Value> = resolved_exposed(&state, &project, &service, &env)
        .await?
        .into_iter()
        .map(|v| {
            json!({
                "name": v.name,
                "preview": vars::preview(&v.value, v.secret),
                "is_secret": v.secret,
                "source": v.origin,
            })
        })
        .collect();
    Ok(data(
        StatusCode::OK,
        json!({ "service_id": service.id, "environment": env.name, "variables": vars_out }),
    ))
}

/// [`exposed`] by name, later entries (own variables) winning over earlier
/// ones (the binding's).
async fn resolved_exposed(
    state: &AppState,
    project: &ProjectRow,
    service: &DataServiceRow,
    env: &EnvironmentRow,
) -> ApiResult<Vec<Exposed>> {
    let mut merged: std::collections::BTreeMap<String, Exposed> = Default::default();
    for var in exposed(state, project, service, env, 3).await? {
        merged.insert(var.name.clone(), var);
    }
    Ok(merged.into_values().collect())
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
    let var = resolved_exposed(&state, &project, &service, &env)
        .await?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| ApiError::not_found("variable", &name))?;
    tracing::info!(key = %principal.key_id, service = service.id, variable = name, "service variable revealed");
    Ok(data(
        StatusCode::OK,
        json!({ "name": var.name, "value": var.value, "source": var.origin, "environment": env.name }),
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
    let vars = resolved_exposed(&state, &project, &service, &env).await?;
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
        json!({
            "service_id": service.id,
            "environment": env.name,
            "private_url": url,
            "url": url,
            "public_url": null,
            "host": get("PGHOST"),
            "port": get("PGPORT").and_then(|p| p.parse::<u16>().ok()),
            "database": get("PGDATABASE"),
            "username": get("PGUSER"),
            "password": get("PGPASSWORD"),
        }),
    ))
}

/// The own variables of `service` in `env`, references resolved, as the
/// service layer of a boot.
pub async fn service_layer(
    state: &AppState,
    project: &ProjectRow,
    service: &DataServiceRow,
    env: &EnvironmentRow,
) -> ApiResult<Vec<(String, String, bool)>> {
    let scope = VariableScope::Service {
        service_id: &service.id,
        environment_id: &env.id,
    };
    let own_names: Vec<String> = state
        .store()?
        .variables(scope)
        .await?
        .into_iter()
        .map(|r| r.name)
        .collect();
    Ok(resolved_exposed(state, project, service, env)
        .await?
        .into_iter()
        .filter(|v| own_names.contains(&v.name))
        .map(|v| (v.name, v.value, v.secret))
        .collect())
}
