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
use mds_api_types::auth::{
    AppUser, AuthMail, AuthServiceStatus, AuthStatus, Secs, SigningKey, SigningKeys,
};
use mds_auth::AuthConfig;
use mds_store::{BindingRow, DataServiceRow, EnvironmentRow, ProjectRow, UserKey};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::data;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::state::AppState;
use crate::views::binding_view;
use mds_control::projects::{load_project, resolve_environment};
use mds_control::realms;

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
    let service = realms::service(state, &target.project.id)
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

/// A setting set as the wire shows it.
fn settings(config: &AuthConfig) -> Map<String, Value> {
    match config.to_stored() {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Whether auth is on in the target's environment, its settings and
/// `AUTH_URL`.
async fn status_view(state: &AppState, target: &Target) -> ApiResult<AuthStatus> {
    let project_id = target.project.id.clone();
    let environment = target.environment.name.clone();
    let Some(service) = realms::service(state, &target.project.id).await? else {
        let off = AuthConfig {
            enabled: false,
            ..AuthConfig::default()
        };
        return Ok(AuthStatus {
            enabled: false,
            state: "disabled".to_string(),
            project_id,
            environment,
            database_id: None,
            config: settings(&off),
            service: None,
        });
    };
    let config = AuthConfig::from_stored(&service.config);
    let bindings = state.store()?.bindings(&service.id).await?;
    let here = bindings
        .iter()
        .find(|b| b.environment_id == target.environment.id);
    let auth_url = here.map(|b| state.reconciler().map(|r| r.auth_url(&service, b)));
    let auth_url = auth_url.transpose()?;
    let mut warnings = Vec::new();
    if config.email_confirm_required && !state.auth.mailer.delivers() {
        warnings.push(
            "email confirmation needs mail: non-production environments keep it in the sink \
             (mds auth mail); production needs the server started with --smtp-url"
                .to_string(),
        );
    }
    let binding_state = here.map_or("unbound", |b| b.state.as_str());
    Ok(AuthStatus {
        enabled: config.enabled,
        state: if config.enabled {
            binding_state
        } else {
            "disabled"
        }
        .to_string(),
        project_id,
        environment,
        database_id: here.map(|b| b.id.clone()),
        config: settings(&config),
        service: Some(AuthServiceStatus {
            service_id: service.id.clone(),
            environment_id: target.environment.id.clone(),
            jwks_url: auth_url
                .as_ref()
                .map(|u| format!("{u}/.well-known/jwks.json")),
            auth_url,
            bindings: bindings.iter().map(binding_view).collect(),
            warnings,
        }),
    })
}

async fn enable(
    state: &AppState,
    target: &Target,
    patch: &Map<String, Value>,
) -> ApiResult<AuthStatus> {
    realms::enable(state, &target.project, patch).await?;
    status_view(state, target).await
}

async fn update(
    state: &AppState,
    target: &Target,
    patch: &Map<String, Value>,
) -> ApiResult<AuthStatus> {
    let service = realms::service(state, &target.project.id)
        .await?
        .ok_or_else(|| not_enabled(&target.project))?;
    realms::configure(state, &service, patch).await?;
    status_view(state, target).await
}

async fn disable(state: &AppState, target: &Target) -> ApiResult<AuthStatus> {
    realms::disable(state, &target.project.id).await?;
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

fn user_view(user: &mds_store::UserRow) -> AppUser {
    AppUser {
        id: user.id.clone(),
        email: user.email.clone(),
        role: user.role.clone(),
        email_confirmed_at: user.email_confirmed_at.map(Secs),
        last_sign_in_at: user.last_sign_in_at.map(Secs),
        user_metadata: user.user_metadata.clone(),
        created_at: Secs(user.created_at),
        updated_at: Secs(user.updated_at),
    }
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
    let items: Vec<AuthMail> = rows
        .into_iter()
        .map(|m| AuthMail {
            id: m.id,
            to: m.recipient,
            subject: m.subject,
            body: m.body,
            delivery: m.delivery,
            created_at: Secs(m.created_at),
        })
        .collect();
    let total = items.len() as u64;
    Ok(super::list(items, 1, limit as u32, total))
}

/// One rotation step for the environment's ES256 keys (see
/// `realms::rotate_keys`).
pub async fn rotate_keys(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<TargetQuery>,
) -> ApiResult<Response> {
    principal.require("auth:write")?;
    let target = target(&state, &principal, &project, query.environment()).await?;
    let (_, binding) = binding(&state, &target).await?;
    let keys = realms::rotate_keys(&state, &target.project.id, &binding.id).await?;
    let keys = keys
        .into_iter()
        .map(|k| SigningKey {
            kid: k.kid,
            state: k.state,
            retired_at: k.retired_at.map(Secs),
        })
        .collect();
    Ok(data(StatusCode::OK, SigningKeys { keys }))
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
