//! MIOSA project services (`/projects/{p}/services`, `/services/{id}`), as
//! the SDK's `client.services` models them: a service lives in one
//! environment, with variables that may hold references
//! (`${{Postgres.DATABASE_URL}}`, `${{shared.NAME}}`, `${{NAME}}`,
//! `${{secret(32)}}`) resolved in that environment.
//!
//! A `database` service is a data service; the same name in another
//! environment is that data service bound there too (its member there has
//! the binding's id). `web`/`private` (`server`), `worker`, `cron` and
//! `static` services are deployments of the project, one per environment.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use mds_api_types::deployments::CreateDeployment;
use mds_api_types::services::{
    EffectiveVariable, EffectiveVariables, ProjectService, RevealedVariable, ServiceConnection,
};
use mds_api_types::SetVariables;
use mds_control::attach::{
    attach, kind_of, remove_service, set_member_desired, wait_settled, KindOptions,
};
use mds_control::pools::{set_pool, PoolRequest};
use mds_control::projects::{load_project, resolve_environment};
use mds_control::references::{draw_secrets, resolve_all, resolved_exposed, Exposed};
use mds_control::variables;
use mds_core::ids::IdKind;
use mds_core::kinds::Desired;
use mds_core::kinds::ServiceKind;
use mds_core::vars;
use mds_store::{DataServiceRow, DeploymentRow, EnvironmentRow, ProjectRow, VariableScope};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{data, deleted, list_all};
use crate::audit::revealed;
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
    source: Option<Value>,
    env: Option<String>,
    environment: Option<String>,
}

/// What a service id names: a data service (all its environments, or the
/// one it is scoped to), a data service in one environment (a binding id:
/// the SDK's service of one name in several environments), or an app
/// service (a deployment id).
enum Subject {
    Data(DataServiceRow),
    App(DeploymentRow),
}

/// A service, its project and the environment a call on it means.
struct Loaded {
    subject: Subject,
    project: Arc<ProjectRow>,
    env: EnvironmentRow,
    /// The binding a member id names: calls act on that environment only.
    member: Option<String>,
}

impl Loaded {
    fn scope(&self) -> VariableScope<'_> {
        match &self.subject {
            Subject::Data(service) => VariableScope::Service {
                service_id: &service.id,
                environment_id: &self.env.id,
            },
            Subject::App(d) => VariableScope::Deployment {
                deployment_id: &d.id,
                environment_id: &self.env.id,
            },
        }
    }

    fn id(&self) -> &str {
        match &self.subject {
            Subject::Data(service) => &service.id,
            Subject::App(d) => &d.id,
        }
    }
}

/// The app kinds (`web` and `private` are `server`, as the SDK maps them)
/// and whether this server runs them.
const APP_KINDS: [(&str, bool); 4] = [
    ("server", true),
    ("worker", true),
    ("cron", false),
    ("static", false),
];

fn app_kind(d: &DeploymentRow) -> Option<&str> {
    d.metadata["service"]["kind"].as_str()
}

/// A data service as the SDK's service in `env` (`None`: as a whole).
async fn data_view(
    state: &AppState,
    principal: &Principal,
    service: &DataServiceRow,
    env: Option<&EnvironmentRow>,
) -> ApiResult<ProjectService> {
    let mut bindings = state.store()?.bindings(&service.id).await?;
    let mut id = service.id.clone();
    let mut environment_id = service.environment_id.clone();
    if let (Some(env), Some(home)) = (env, &service.environment_id) {
        bindings.retain(|b| b.environment_id == env.id);
        if &env.id != home {
            // Its member in another environment has the binding's id.
            if let Some(b) = bindings.first() {
                id = b.id.clone();
            }
            environment_id = Some(env.id.clone());
        }
    }
    let view = service_view(&principal.tenant_id, service, &bindings);
    Ok(ProjectService {
        id,
        project_id: service.project_id.clone(),
        tenant_id: principal.tenant_id.clone(),
        name: service.name.clone(),
        slug: mds_core::names::slugify(&service.name).unwrap_or_default(),
        kind: "database".to_string(),
        service_type: "database".to_string(),
        engine: Some(view.engine),
        state: view.state,
        state_reason: bindings.iter().find_map(|b| b.last_error.clone()),
        deployment_id: None,
        environment_id,
        settings: data_settings(service, &bindings, &view.engine_version),
        env_prefix: service.env_prefix.clone(),
        lock_version: 0,
        bindings: view.bindings,
        created_at: service.created_at,
        updated_at: service.updated_at,
    })
}

/// A database service's settings: its engine and, for Postgres, the
/// pooling of its member (of the first binding, as a whole).
fn data_settings(
    service: &DataServiceRow,
    bindings: &[mds_store::BindingRow],
    engine_version: &str,
) -> Value {
    let mut settings = json!({ "engine": service.kind, "engine_version": engine_version });
    if service.kind == ServiceKind::Postgres.as_str() {
        if let Some(binding) = bindings.first() {
            settings["pool_mode"] = json!(binding.pool_mode);
            settings["pool_size"] = json!(binding.pool_size);
            settings["pool_max_clients"] = json!(binding.pool_max_clients);
        }
    }
    settings
}

/// An app service: a deployment whose releases run its kind.
async fn app_view(state: &AppState, d: &DeploymentRow) -> ApiResult<ProjectService> {
    let kind = app_kind(d).unwrap_or("server").to_string();
    let environment_id = d.metadata["service"]["environment_id"]
        .as_str()
        .map(str::to_string);
    let runs = APP_KINDS.iter().any(|(k, runs)| *k == kind && *runs);
    let active = state
        .store()?
        .active_versions(&d.id)
        .await?
        .into_iter()
        .any(|a| Some(&a.environment_id) == environment_id.as_ref());
    let (service_state, reason) = match (runs, active, d.stopped) {
        (false, _, _) => (
            "unsupported",
            Some(format!(
                "{kind} services do not run on this server yet; the service and its \
                 variables are stored"
            )),
        ),
        (true, _, true) => ("stopped", Some("stopped: start it to serve again".into())),
        (true, true, false) => ("active", None),
        (true, false, false) => (
            "inactive",
            Some(format!(
                "no release yet: publish one to deployment {} (client.deployments.publish, \
                 or `mds deploy`); its instances get this service's variables with \
                 references resolved at boot",
                d.id
            )),
        ),
    };
    let name = d.metadata["service"]["name"]
        .as_str()
        .unwrap_or(&d.name)
        .to_string();
    Ok(ProjectService {
        id: d.id.clone(),
        project_id: d.project_id.clone().unwrap_or_default(),
        tenant_id: d.tenant_id.clone(),
        slug: mds_core::names::slugify(&name).unwrap_or_default(),
        name,
        service_type: kind.clone(),
        kind,
        engine: None,
        state: service_state.to_string(),
        state_reason: reason,
        deployment_id: Some(d.id.clone()),
        environment_id,
        settings: d.metadata["service"]["settings"].clone(),
        env_prefix: String::new(),
        lock_version: 0,
        bindings: Vec::new(),
        created_at: d.created_at,
        updated_at: d.updated_at,
    })
}

async fn loaded_view(
    state: &AppState,
    principal: &Principal,
    loaded: &Loaded,
) -> ApiResult<ProjectService> {
    match &loaded.subject {
        Subject::Data(service) => data_view(state, principal, service, Some(&loaded.env)).await,
        Subject::App(d) => app_view(state, d).await,
    }
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
        .clone()
        .or(body.service_type.clone())
        .unwrap_or_else(|| "server".to_string());
    let kind = match kind.as_str() {
        "web" | "private" => "server".to_string(),
        _ => kind,
    };
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::missing_field("name"))?;
    let environment = query
        .environment()
        .map(str::to_string)
        .or(body.env.clone())
        .or(body.environment.clone());
    let store = state.store()?;
    let project = load_project(store, &principal, &project).await?;
    if kind != "database" {
        if !APP_KINDS.iter().any(|(k, _)| *k == kind) {
            return Err(ApiError::invalid_field(
                "kind",
                format!(
                    "unknown service kind {kind:?}; use web, private, worker, cron, static or \
                     database"
                ),
            ));
        }
        let env = resolve_environment(store, &project, environment.as_deref()).await?;
        let d = create_app(&state, &principal, &project, &env, &kind, &name, body).await?;
        return Ok(data(StatusCode::CREATED, app_view(&state, &d).await?));
    }
    let engine = body
        .settings
        .as_ref()
        .and_then(|s| s.get("engine"))
        .and_then(Value::as_str)
        .unwrap_or("postgres");
    let kind = match kind_of(engine) {
        Ok(kind @ (ServiceKind::Postgres | ServiceKind::Redis)) => kind,
        _ => {
            return Err(ApiError::invalid_field(
                "settings.engine",
                format!("engine {engine:?} is not available; use postgres or redis"),
            ))
        }
    };
    let options = KindOptions {
        engine_version: match body
            .settings
            .as_ref()
            .and_then(|s| s.get("engine_version").or_else(|| s.get("version")))
        {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) => Some(v.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                return Err(ApiError::invalid_field(
                    "settings.engine_version",
                    "must be a version such as \"16\"",
                ))
            }
        },
        ..KindOptions::default()
    };
    // As the SDK documents it: a service lives in one environment, the
    // default one unless named.
    let env = resolve_environment(store, &project, environment.as_deref()).await?;
    let service = attach(
        state.control(),
        &project,
        kind,
        Some(name),
        Some(&env.id),
        &options,
    )
    .await?;
    Ok(data(
        StatusCode::CREATED,
        data_view(&state, &principal, &service, Some(&env)).await?,
    ))
}

/// Stores an app service as a deployment of the project, one per
/// (name, environment), with the service's settings.
async fn create_app(
    state: &AppState,
    principal: &Principal,
    project: &ProjectRow,
    env: &EnvironmentRow,
    kind: &str,
    name: &str,
    body: CreateService,
) -> ApiResult<DeploymentRow> {
    mds_core::names::validate_service_name("name", name)?;
    let store = state.store()?;
    let apps = store
        .deployments(&principal.tenant_id, Some(&project.id))
        .await?;
    let same_name = |d: &&DeploymentRow| {
        d.metadata["service"]["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    };
    let data_taken = store
        .environment_bindings(&env.id)
        .await?
        .iter()
        .any(|(s, _)| s.name.eq_ignore_ascii_case(name));
    let in_env = apps
        .iter()
        .filter(same_name)
        .any(|d| d.metadata["service"]["environment_id"].as_str() == Some(env.id.as_str()));
    if data_taken || in_env {
        return Err(ApiError::conflict(
            "SERVICE_NAME_TAKEN",
            format!(
                "environment {:?} already has a service named {name:?}",
                env.name
            ),
        ));
    }
    let settings = match body.settings {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(ApiError::invalid_field("settings", "must be an object")),
    };
    // A deployment's name is its address, unique on the server: the
    // project's slug goes in front, and the same service name in a second
    // environment adds the environment.
    let deployment_name = if apps.iter().any(|d| same_name(&d)) {
        format!("{}-{name}-{}", project.slug, env.slug)
    } else {
        format!("{}-{name}", project.slug)
    };
    let text = |key: &str| {
        settings
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let input = CreateDeployment {
        name: Some(deployment_name),
        run_command: text("start_command").or_else(|| text("run_command")),
        build_command: text("build_command"),
        port: settings.get("port").and_then(Value::as_i64),
        health_check_path: text("health_check_path"),
        metadata: Some(json!({
            "service": {
                "kind": kind,
                "name": name,
                "environment_id": env.id,
                "settings": settings,
                "source": body.source,
            }
        })),
        project_id: Some(project.id.clone()),
        project_slug: None,
    };
    Ok(state.create_deployment(principal, input).await?)
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
        let bindings = store.bindings(&service.id).await?;
        match (&env, &service.environment_id) {
            // Bound everywhere: one service, in every listing.
            (_, None) => rows.push(data_view(&state, &principal, &service, env.as_ref()).await?),
            (Some(env), Some(_)) => {
                if bindings.iter().any(|b| b.environment_id == env.id) {
                    rows.push(data_view(&state, &principal, &service, Some(env)).await?);
                }
            }
            // Each environment's member of a scoped service.
            (None, Some(_)) => {
                for b in &bindings {
                    if let Some(member_env) = project
                        .environments
                        .iter()
                        .find(|e| e.id == b.environment_id)
                    {
                        rows.push(data_view(&state, &principal, &service, Some(member_env)).await?);
                    }
                }
            }
        }
    }
    for d in store
        .deployments(&principal.tenant_id, Some(&project.id))
        .await?
    {
        let Some(home) = app_kind(&d).and(d.metadata["service"]["environment_id"].as_str()) else {
            continue;
        };
        if env.as_ref().is_none_or(|e| e.id == home) {
            rows.push(app_view(&state, &d).await?);
        }
    }
    Ok(super::list_all(rows))
}

/// The caller's service `id`, its project, and the environment a call
/// means: the one a binding id names, else `?env=`, else the service's own,
/// else the project's default.
async fn load(
    state: &AppState,
    principal: &Principal,
    id: &str,
    query: &EnvQuery,
) -> ApiResult<Loaded> {
    let store = state.store()?;
    let not_found = || ApiError::not_found("service", id);
    if IdKind::Deployment.matches(id) {
        let d = state.deployment(principal, id).await?;
        if app_kind(&d).is_none() {
            return Err(not_found());
        }
        let project = state.deployment_project(&d).await?;
        let home = d.metadata["service"]["environment_id"].as_str();
        let env = resolve_environment(store, &project, query.environment().or(home)).await?;
        return Ok(Loaded {
            subject: Subject::App(d),
            project,
            env,
            member: None,
        });
    }
    // A binding id names a service's member in one environment (and no
    // tenant: the service's load checks that).
    let pinned = match IdKind::Binding.matches(id) {
        true => Some(
            store
                .binding_with_service(id)
                .await?
                .ok_or_else(not_found)?,
        ),
        false => None,
    };
    let service_id = pinned
        .as_ref()
        .map_or(id, |(service, _)| service.id.as_str());
    let service = store
        .data_service(&principal.tenant_id, service_id)
        .await?
        .filter(|s| !s.standalone)
        .ok_or_else(not_found)?;
    let project = load_project(store, principal, &service.project_id).await?;
    let reference = pinned
        .as_ref()
        .map(|(_, b)| b.environment_id.as_str())
        .or(query.environment())
        .or(service.environment_id.as_deref());
    let env = resolve_environment(store, &project, reference).await?;
    let bindings = store.bindings(&service.id).await?;
    let Some(binding) = bindings.into_iter().find(|b| b.environment_id == env.id) else {
        return Err(ApiError::not_found(
            &format!("service {:?} in environment", service.name),
            &env.name,
        ));
    };
    // A scoped service's every call acts in one environment: its member
    // there. One bound everywhere acts as a whole.
    let member = service.environment_id.is_some().then_some(binding.id);
    Ok(Loaded {
        subject: Subject::Data(service),
        project,
        env,
        member,
    })
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let loaded = load(&state, &principal, &id, &query).await?;
    Ok(data(
        StatusCode::OK,
        loaded_view(&state, &principal, &loaded).await?,
    ))
}

/// `PATCH /services/{id}` (the SDK's `services.update`). A database
/// service takes the pool settings (`settings.pool_mode`,
/// `settings.pool_size`, `settings.pool_max_clients`; null returns one to
/// its default) of its member in
/// one environment (a member id or `?env=`), or of every member. Renames,
/// sources and app services' settings are not offered (501).
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let loaded = load(&state, &principal, &id, &query).await?;
    let not_offered = || ApiError::not_implemented("updating a service's name, source or settings");
    let Subject::Data(service) = &loaded.subject else {
        return Err(not_offered());
    };
    let Some(body) = body.as_object() else {
        return Err(ApiError::invalid_field("body", "must be a JSON object"));
    };
    for (field, value) in body {
        match field.as_str() {
            "settings" => {}
            // What it was read with is what it has: services of a data
            // service have one version.
            "lock_version" if value.as_u64() == Some(0) => {}
            "lock_version" => {
                return Err(ApiError::conflict(
                    "STALE_SERVICE",
                    "the service changed since it was read (lock_version 0 is current)",
                ))
            }
            _ => return Err(not_offered()),
        }
    }
    let settings = match body.get("settings") {
        Some(Value::Object(settings)) => settings.clone(),
        Some(_) => return Err(ApiError::invalid_field("settings", "must be an object")),
        None => return Err(ApiError::invalid_field("settings", "nothing to change")),
    };
    let request = PoolRequest::from_settings(&settings)?;
    // A member or binding id, or `?env=`, is one environment; otherwise
    // every one.
    let one =
        loaded.member.is_some() || IdKind::Binding.matches(&id) || query.environment().is_some();
    set_pool(
        state.control(),
        service,
        one.then_some(&loaded.env),
        &request,
    )
    .await?;
    Ok(data(
        StatusCode::OK,
        loaded_view(&state, &principal, &loaded).await?,
    ))
}

/// The SDK's delete of one service: the call itself is the explicit act.
/// A database service's member in one environment goes alone; the
/// service as a whole takes its data in every environment with it.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let loaded = load(&state, &principal, &id, &query).await?;
    match (&loaded.subject, &loaded.member) {
        (Subject::Data(service), Some(member)) => {
            set_member_desired(state.control(), service, member, Desired::Deleted).await?
        }
        (Subject::Data(service), None) => remove_service(state.control(), service).await?,
        (Subject::App(d), _) => state.deployer()?.remove(&state, d).await?,
    }
    Ok(deleted(&id))
}

/// Starts a stopped database service (in its one environment, for a
/// member id). Already running is a conflict, as the SDK documents.
pub async fn start(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let loaded = load(&state, &principal, &id, &query).await?;
    let Subject::Data(service) = &loaded.subject else {
        return Err(ApiError::not_implemented(
            "starting an app service (publish a release to its deployment)",
        ));
    };
    let view = loaded_view(&state, &principal, &loaded).await?;
    if view.state == "running" {
        return Err(ApiError::conflict(
            "SERVICE_RUNNING",
            format!("{} is already running", service.name),
        ));
    }
    lifecycle(&state, &loaded, service, Desired::Running).await?;
    Ok(data(
        StatusCode::OK,
        loaded_view(&state, &principal, &loaded).await?,
    ))
}

/// Stops a service now: a database service's engine-side sessions end and
/// its data stays; an app service's instances stop. `{"stopped": n}`.
pub async fn stop(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let loaded = load(&state, &principal, &id, &query).await?;
    let stopped = match &loaded.subject {
        Subject::Data(service) => lifecycle(&state, &loaded, service, Desired::Stopped).await?,
        Subject::App(d) => {
            let serving = state.store()?.active_versions(&d.id).await?.len();
            state.stop_deployment(d).await?;
            serving
        }
    };
    Ok(data(StatusCode::OK, json!({ "stopped": stopped })))
}

/// Ends every session of a database service's roles (data and credentials
/// stay).
pub async fn restart(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let loaded = load(&state, &principal, &id, &query).await?;
    let Subject::Data(service) = &loaded.subject else {
        return Err(ApiError::not_implemented(
            "restarting an app service (publish or promote a release of its deployment)",
        ));
    };
    mds_control::attach::restart(state.control(), service, loaded.member.as_deref()).await?;
    Ok(data(
        StatusCode::OK,
        loaded_view(&state, &principal, &loaded).await?,
    ))
}

/// Sets a database service's bindings (a member's one binding) to
/// `desired` and waits; how many bindings that covered.
async fn lifecycle(
    state: &AppState,
    loaded: &Loaded,
    service: &DataServiceRow,
    desired: Desired,
) -> ApiResult<usize> {
    match &loaded.member {
        Some(member) => {
            set_member_desired(state.control(), service, member, desired).await?;
            wait_settled(state.control(), &service.id).await?;
            Ok(1)
        }
        None => {
            mds_control::attach::set_desired(state.control(), service, desired).await?;
            Ok(state.store()?.bindings(&service.id).await?.len())
        }
    }
}

pub async fn variables(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:read")?;
    let loaded = load(&state, &principal, &id, &query).await?;
    Ok(list_all(
        variable_views(&state, loaded.scope(), &loaded.env, false).await?,
    ))
}

pub async fn set_variables(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(mut query): QueryParams<EnvQuery>,
    JsonBody(body): JsonBody<SetVariables>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let mut entries = variables::entries(body.variables)?;
    for entry in entries.iter_mut() {
        entry.value = draw_secrets(&entry.value)
            .map_err(|e| ApiError::invalid_field("variables", format!("{}: {e}", entry.name)))?;
    }
    if query.environment().is_none() {
        query.set_environment(body.env.or(body.environment));
    }
    let loaded = load(&state, &principal, &id, &query).await?;
    state
        .write_variables(&principal, loaded.scope(), entries)
        .await?;
    Ok(list_all(
        variable_views(&state, loaded.scope(), &loaded.env, false).await?,
    ))
}

pub async fn delete_variables(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((id, names)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let loaded = load(&state, &principal, &id, &query).await?;
    let store = state.store()?;
    for name in names.split(',').filter(|n| !n.is_empty()) {
        store.delete_variable(loaded.scope(), name).await?;
    }
    Ok(deleted(&names))
}

/// What a boot of the service would receive from it, references resolved:
/// a database's binding and own variables, an app service's variables.
async fn effective_of(state: &AppState, loaded: &Loaded) -> ApiResult<Vec<Exposed>> {
    match &loaded.subject {
        Subject::Data(service) => {
            Ok(resolved_exposed(state.control(), &loaded.project, service, &loaded.env).await?)
        }
        Subject::App(d) => {
            let own = state
                .open_variables(loaded.scope())
                .await?
                .into_iter()
                .map(|(row, value)| (row.name, value.to_string(), row.is_secret))
                .collect();
            Ok(
                resolve_all(state.control(), &loaded.project, &loaded.env, own)
                    .await?
                    .into_iter()
                    .map(|(name, value, secret)| Exposed {
                        name,
                        value,
                        secret,
                        origin: format!("{} (variable)", d.name),
                    })
                    .collect(),
            )
        }
    }
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
    let loaded = load(&state, &principal, &id, &query).await?;
    let variables = effective_of(&state, &loaded)
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
            service_id: loaded.id().to_string(),
            environment: loaded.env.name.clone(),
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
    let loaded = load(&state, &principal, &id, &query).await?;
    let var = effective_of(&state, &loaded)
        .await?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| ApiError::not_found("variable", &name))?;
    tracing::info!(key = %principal.key_id, service = loaded.id(), variable = name, "service variable revealed");
    let project_id = loaded.project.id.clone();
    let response = data(
        StatusCode::OK,
        RevealedVariable {
            name: var.name,
            value: var.value,
            source: var.origin,
            environment: loaded.env.name,
        },
    );
    Ok(revealed(response, Some(&project_id), [name]))
}

/// A database service's connection in its environment (it holds a
/// password).
pub async fn connection(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:reveal")?;
    let loaded = load(&state, &principal, &id, &query).await?;
    let Subject::Data(service) = &loaded.subject else {
        return Err(ApiError::invalid_field(
            "id",
            "an app service has no database connection; read its variables instead",
        ));
    };
    let env = &loaded.env;
    let vars = resolved_exposed(state.control(), &loaded.project, service, env).await?;
    let get = |n: &str| vars.iter().find(|v| v.name == n).map(|v| v.value.clone());
    let Some(url) = get("DATABASE_URL").or_else(|| get("REDIS_URL")) else {
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
            service_id: loaded.id().to_string(),
            environment: env.name.clone(),
            private_url: url.clone(),
            url,
            public_url: None,
            host: get("PGHOST").or_else(|| get("REDIS_HOST")),
            port: get("PGPORT")
                .or_else(|| get("REDIS_PORT"))
                .and_then(|p| p.parse::<u16>().ok()),
            database: get("PGDATABASE"),
            username: get("PGUSER"),
            password: get("PGPASSWORD").or_else(|| get("REDIS_PASSWORD")),
        },
    ))
}
