//! Auth administration: enable, configure, disable; users, captured mail
//! and signing-key rotation. Natively under `/projects/{p}/auth`, and as
//! the MIOSA SDK's `/project-auth/{status,enable,disable,config}`, where a
//! resource (`project`, or a sandbox or deployment) names the project and
//! environment.
//!
//! Settings need `auth:write` (they decide who can log in and where mail
//! links lead); reading status `projects:read`; users and mail `auth:read`.
//!
//! Auth is a data service of kind `auth` with a binding per environment:
//! each environment has its own users, secret and keys. Disabling keeps
//! them; only deleting the service (confirmed) removes them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::SecondsFormat;
use mds_auth::AuthConfig;
use mds_core::kinds::ServiceKind;
use mds_store::{BindingRow, DataServiceRow, EnvironmentRow, ProjectRow, UserKey};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::data;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::state::AppState;
use crate::views::binding_view;
use mds_control::attach::{attach, wait_settled, KindOptions};
use mds_control::projects::{load_project, resolve_environment};

#[derive(Deserialize, Default)]
pub struct TargetQuery {
    environment: Option<String>,
    env: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    limit: Option<i64>,
    page: Option<i64>,
    per_page: Option<i64>,
}

impl TargetQuery {
    fn environment(&self) -> Option<&str> {
        self.environment.as_deref().or(self.env.as_deref())
    }
}

/// A MIOSA `/project-auth/*` body: the resource and the settings.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ResourceBody {
    resource_type: Option<String>,
    resource_id: Option<String>,
    environment: Option<String>,
    config: Option<Map<String, Value>>,
}

/// The project and environment a call is about.
struct Target {
    project: Arc<ProjectRow>,
    environment: EnvironmentRow,
}

async fn target(
    state: &AppState,
    principal: &Principal,
    project: &str,
    environment: Option<&str>,
) -> ApiResult<Target> {
    let store = state.store()?;
    let project = load_project(store, principal, project).await?;
    let environment = resolve_environment(store, &project, environment).await?;
    Ok(Target {
        project,
        environment,
    })
}

/// A MIOSA resource: a `project` (id or slug, in `environment` or the
/// default one), or a sandbox (its project, in the environment it boots
/// in). Deployments resolve to theirs once they exist on this server.
async fn resource_target(
    state: &AppState,
    principal: &Principal,
    resource_type: Option<&str>,
    resource_id: Option<&str>,
    environment: Option<&str>,
) -> ApiResult<Target> {
    let resource_type = resource_type
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::missing_field("resource_type"))?;
    let resource_id = resource_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::missing_field("resource_id"))?;
    match resource_type {
        "project" => target(state, principal, resource_id, environment).await,
        // A sandbox names its project and the environment it boots in.
        "sandbox" => {
            let sandbox = state
                .store()?
                .sandbox(&principal.tenant_id, resource_id)
                .await?
                .ok_or_else(|| ApiError::not_found("sandbox", resource_id))?;
            let project = sandbox.project_id.as_deref().ok_or_else(|| {
                ApiError::invalid_field(
                    "resource_id",
                    "this sandbox belongs to no project; auth is per project",
                )
            })?;
            let environment = environment.or(sandbox.environment_id.as_deref());
            target(state, principal, project, environment).await
        }
        // A deployment names its project; production unless told.
        "deployment" => {
            let deployment = state
                .store()?
                .deployment(&principal.tenant_id, resource_id)
                .await?
                .ok_or_else(|| ApiError::not_found("deployment", resource_id))?;
            let project = deployment.project_id.as_deref().ok_or_else(|| {
                ApiError::invalid_field(
                    "resource_id",
                    "this deployment has no project yet; auth is per project",
                )
            })?;
            target(
                state,
                principal,
                project,
                environment.or(Some("production")),
            )
            .await
        }
        other => Err(ApiError::invalid_field(
            "resource_type",
            format!("{other:?} is not sandbox, deployment or project"),
        )),
    }
}

async fn auth_service(state: &AppState, project: &ProjectRow) -> ApiResult<Option<DataServiceRow>> {
    Ok(state
        .store()?
        .data_services(&project.id)
        .await?
        .into_iter()
        .find(|s| s.kind.parse() == Ok(ServiceKind::Auth) && !s.deleting))
}

fn not_enabled(project: &ProjectRow) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "AUTH_NOT_ENABLED",
        format!(
            "project {:?} has no auth; enable it with POST /projects/{}/auth",
            project.slug, project.id
        ),
    )
}

/// The auth service and its binding in the target's environment.
async fn binding(state: &AppState, target: &Target) -> ApiResult<(DataServiceRow, BindingRow)> {
    let service = auth_service(state, &target.project)
        .await?
        .ok_or_else(|| not_enabled(&target.project))?;
    let binding = state
        .store()?
        .bindings(&service.id)
        .await?
        .into_iter()
        .find(|b| b.environment_id == target.environment.id)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "AUTH_NOT_ENABLED",
                format!(
                    "auth is not bound in environment {:?}",
                    target.environment.name
                ),
            )
        })?;
    Ok((service, binding))
}

/// `{enabled, state, database_id, config, auth_url, ...}` for one
/// environment.
async fn status_view(state: &AppState, target: &Target) -> ApiResult<Value> {
    let Some(service) = auth_service(state, &target.project).await? else {
        return Ok(json!({
            "enabled": false,
            "state": "disabled",
            "project_id": target.project.id,
            "environment": target.environment.name,
            "database_id": null,
            "config": AuthConfig { enabled: false, ..AuthConfig::default() }.to_stored(),
        }));
    };
    let config = AuthConfig::from_stored(&service.config);
    let bindings = state.store()?.bindings(&service.id).await?;
    let here = bindings
        .iter()
        .find(|b| b.environment_id == target.environment.id);
    let reconciler = state.reconciler()?;
    let auth_url = here.map(|b| reconciler.auth_url(&service, b));
    let mut warnings = Vec::new();
    if config.email_confirm_required && !state.auth.mailer.delivers() {
        warnings.push(
            "email confirmation needs mail: non-production environments keep it in the sink \
             (mds auth mail); production needs the server started with --smtp-url",
        );
    }
    Ok(json!({
        "enabled": config.enabled,
        "state": if !config.enabled { "disabled" } else { here.map_or("unbound", |b| b.state.as_str()) },
        "service_id": service.id,
        "database_id": here.map(|b| b.id.clone()),
        "project_id": target.project.id,
        "environment": target.environment.name,
        "environment_id": target.environment.id,
        "auth_url": auth_url,
        "jwks_url": auth_url.as_ref().map(|u| format!("{u}/.well-known/jwks.json")),
        "config": config.to_stored(),
        "bindings": bindings.iter().map(binding_view).collect::<Vec<_>>(),
        "warnings": warnings,
    }))
}

/// Enables auth (attaching it on first use) with `patch` applied.
async fn enable(state: &AppState, target: &Target, patch: &Map<String, Value>) -> ApiResult<Value> {
    match auth_service(state, &target.project).await? {
        None => {
            let options = KindOptions {
                auth: Some(patch.clone()),
                ..KindOptions::default()
            };
            let service = attach(
                state.control(),
                &target.project,
                ServiceKind::Auth,
                None,
                None,
                &options,
            )
            .await?;
            wait_settled(state.control(), &service.id).await?;
        }
        Some(service) => {
            let mut patch = patch.clone();
            patch.insert("enabled".into(), Value::Bool(true));
            configure(state, &service, &patch).await?;
        }
    }
    state.auth.forget(&target.project.id);
    status_view(state, target).await
}

async fn configure(
    state: &AppState,
    service: &DataServiceRow,
    patch: &Map<String, Value>,
) -> ApiResult<()> {
    let mut config = AuthConfig::from_stored(&service.config);
    config
        .apply(patch)
        .map_err(|e| ApiError::invalid_field(&e.field, e.message))?;
    state
        .store()?
        .set_service_config(&service.id, &config.to_stored())
        .await?;
    state.auth.forget(&service.project_id);
    tracing::info!(service = service.id, "auth settings changed");
    Ok(())
}

async fn update(state: &AppState, target: &Target, patch: &Map<String, Value>) -> ApiResult<Value> {
    let service = auth_service(state, &target.project)
        .await?
        .ok_or_else(|| not_enabled(&target.project))?;
    configure(state, &service, patch).await?;
    status_view(state, target).await
}

async fn disable(state: &AppState, target: &Target) -> ApiResult<Value> {
    if let Some(service) = auth_service(state, &target.project).await? {
        let mut patch = Map::new();
        patch.insert("enabled".into(), Value::Bool(false));
        configure(state, &service, &patch).await?;
    }
    status_view(state, target).await
}

/// Settings from a native body: the body itself, or its `config`.
fn settings_of(body: Value) -> ApiResult<Map<String, Value>> {
    match body {
        Value::Object(mut map) => match map.remove("config") {
            Some(Value::Object(config)) => {
                let mut merged = map;
                merged.extend(config);
                Ok(merged)
            }
            Some(Value::Null) | None => Ok(map),
            Some(_) => Err(ApiError::invalid_field("config", "must be an object")),
        },
        Value::Null => Ok(Map::new()),
        _ => Err(ApiError::invalid_field("body", "must be a JSON object")),
    }
}

// ---- native: /projects/{p}/auth ----

pub async fn native_status(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<TargetQuery>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let target = target(&state, &principal, &project, query.environment()).await?;
    Ok(data(StatusCode::OK, status_view(&state, &target).await?))
}

pub async fn native_enable(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<TargetQuery>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Response> {
    principal.require("auth:write")?;
    let target = target(&state, &principal, &project, query.environment()).await?;
    let patch = settings_of(body)?;
    Ok(data(StatusCode::OK, enable(&state, &target, &patch).await?))
}

pub async fn native_update(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<TargetQuery>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Response> {
    principal.require("auth:write")?;
    let target = target(&state, &principal, &project, query.environment()).await?;
    let patch = settings_of(body)?;
    Ok(data(StatusCode::OK, update(&state, &target, &patch).await?))
}

pub async fn native_disable(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<TargetQuery>,
) -> ApiResult<Response> {
    principal.require("auth:write")?;
    let target = target(&state, &principal, &project, query.environment()).await?;
    Ok(data(StatusCode::OK, disable(&state, &target).await?))
}

fn user_view(user: &mds_store::UserRow) -> Value {
    let ts = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
    };
    json!({
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "email_confirmed_at": ts(user.email_confirmed_at),
        "last_sign_in_at": ts(user.last_sign_in_at),
        "user_metadata": user.user_metadata,
        "created_at": ts(Some(user.created_at)),
        "updated_at": ts(Some(user.updated_at)),
    })
}

pub async fn users(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<TargetQuery>,
) -> ApiResult<Response> {
    principal.require("auth:read")?;
    let target = target(&state, &principal, &project, query.environment()).await?;
    let (_, binding) = binding(&state, &target).await?;
    let per_page = query.per_page.or(query.limit).unwrap_or(50).clamp(1, 1000);
    let page = query.page.unwrap_or(1).clamp(1, 1_000_000);
    let (rows, total) = state
        .store()?
        .auth_users(&binding.id, per_page, (page - 1) * per_page)
        .await?;
    Ok(super::list(
        rows.iter().map(user_view).collect(),
        page as u32,
        per_page as u32,
        total as u64,
    ))
}

#[derive(Deserialize)]
pub struct UserPath {
    project: String,
    user: String,
}

pub async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<UserPath>,
    QueryParams(query): QueryParams<TargetQuery>,
) -> ApiResult<Response> {
    principal.require("auth:write")?;
    let target = target(&state, &principal, &path.project, query.environment()).await?;
    let (_, binding) = binding(&state, &target).await?;
    let store = state.store()?;
    // By id or by email.
    let user = match store
        .auth_user(&binding.id, UserKey::Id(&path.user))
        .await?
    {
        Some(user) => Some(user),
        None => match mds_auth::normalize_email(&path.user) {
            Ok(email) => store.auth_user(&binding.id, UserKey::Email(&email)).await?,
            Err(_) => None,
        },
    }
    .ok_or_else(|| ApiError::not_found("user", &path.user))?;
    store.delete_auth_user(&binding.id, &user.id).await?;
    tracing::info!(user = user.id, binding = binding.id, "end user deleted");
    Ok(super::deleted(&user.id))
}

pub async fn mail(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<TargetQuery>,
) -> ApiResult<Response> {
    principal.require("auth:read")?;
    let target = target(&state, &principal, &project, query.environment()).await?;
    let (_, binding) = binding(&state, &target).await?;
    let limit = query.limit.unwrap_or(20).clamp(1, 500);
    let rows = state.store()?.mail(&binding.id, limit).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "to": m.recipient,
                "subject": m.subject,
                "body": m.body,
                "delivery": m.delivery,
                "created_at": m.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            })
        })
        .collect();
    let total = items.len() as u64;
    Ok(super::list(items, 1, limit as u32, total))
}

/// One rotation step for the environment's ES256 keys: the standby key
/// starts signing, the active one retires (still published until its
/// tokens expire) and a new standby is published.
pub async fn rotate_keys(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<TargetQuery>,
) -> ApiResult<Response> {
    principal.require("auth:write")?;
    let target = target(&state, &principal, &project, query.environment()).await?;
    let (_, binding) = binding(&state, &target).await?;
    let (kid, private, jwk) = mds_auth::jwt::new_es256_key();
    let sealed = state.master_key.seal(
        &mds_provision::Reconciler::signing_key_context(&kid),
        &private,
    );
    let store = state.store()?;
    store
        .rotate_signing_keys(&binding.id, &kid, &sealed, &jwk)
        .await?;
    state.auth.forget(&target.project.id);
    let keys = store.signing_keys(&binding.id, 1e9).await?;
    tracing::info!(
        binding = binding.id,
        standby = kid,
        "auth signing keys rotated"
    );
    Ok(data(
        StatusCode::OK,
        json!({
            "keys": keys.iter().map(|k| json!({
                "kid": k.kid,
                "state": k.state,
                "retired_at": k.retired_at.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            })).collect::<Vec<_>>(),
        }),
    ))
}

// ---- MIOSA: /project-auth/* ----

pub async fn miosa_status(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<TargetQuery>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let target = resource_target(
        &state,
        &principal,
        query.resource_type.as_deref(),
        query.resource_id.as_deref(),
        query.environment(),
    )
    .await?;
    Ok(data(StatusCode::OK, status_view(&state, &target).await?))
}

async fn miosa_target(
    state: &AppState,
    principal: &Principal,
    body: &ResourceBody,
) -> ApiResult<Target> {
    let environment = body.environment.as_deref().or_else(|| {
        body.config
            .as_ref()
            .and_then(|c| c.get("environment"))
            .and_then(Value::as_str)
    });
    resource_target(
        state,
        principal,
        body.resource_type.as_deref(),
        body.resource_id.as_deref(),
        environment,
    )
    .await
}

pub async fn miosa_enable(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<ResourceBody>,
) -> ApiResult<Response> {
    principal.require("auth:write")?;
    let target = miosa_target(&state, &principal, &body).await?;
    let patch = body.config.clone().unwrap_or_default();
    Ok(data(StatusCode::OK, enable(&state, &target, &patch).await?))
}

pub async fn miosa_update(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<ResourceBody>,
) -> ApiResult<Response> {
    principal.require("auth:write")?;
    let target = miosa_target(&state, &principal, &body).await?;
    let patch = body.config.clone().unwrap_or_default();
    Ok(data(StatusCode::OK, update(&state, &target, &patch).await?))
}

pub async fn miosa_disable(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<ResourceBody>,
) -> ApiResult<Response> {
    principal.require("auth:write")?;
    let target = miosa_target(&state, &principal, &body).await?;
    Ok(data(StatusCode::OK, disable(&state, &target).await?))
}
