//! MIOSA `/sandboxes`: ephemeral, jailed process environments that boot
//! with their project environment's variables (bindings, shared variables,
//! then their own), run commands, and go without touching any data.
//!
//! A sandbox's environment defaults to `staging`, so that development
//! never writes to production by accident. Variables are resolved at boot
//! (create, resume, or the first command after mds restarted) and kept
//! until the next boot.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use mds_core::ids::IdKind;
use mds_runtime::sandbox::{Command, Output};
use mds_store::{NewSandbox, SandboxRow, StoreError};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::{data, ts};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::state::AppState;
use mds_control::projects::{load_project, project_id_of, resolve_environment};
use mds_control::variables::{check_entry, may_steer_programs, object_entries};

/// The longest command line (the kernel refuses much longer arguments).
const MAX_COMMAND_BYTES: usize = 64 << 10;

/// The longest a command may run.
const MAX_TIMEOUT_SECS: f64 = 600.0;
const DEFAULT_TIMEOUT_SECS: f64 = 60.0;
/// Where a sandbox boots when its creator names no environment.
const DEFAULT_ENVIRONMENT: &str = "staging";

/// A sandbox as the SDK's `Sandbox` reads it.
fn view(row: &SandboxRow) -> Value {
    let running = row.state == "running";
    let mut metadata = row.metadata.as_object().cloned().unwrap_or_default();
    if let Some(environment) = &row.environment {
        metadata.insert("environment".into(), json!(environment));
    }
    if let Some(error) = &row.last_error {
        metadata.insert("last_error".into(), json!(error));
    }
    json!({
        "id": row.id,
        "state": row.state,
        "ready": running,
        "template_id": row.template_id,
        "tenant_id": row.tenant_id,
        "project_id": row.project_id,
        "project_slug": row.project_slug,
        "project_name": row.project_name,
        "environment": row.environment,
        "environment_id": row.environment_id,
        "name": row.name,
        "slug": row.name,
        "tags": row.tags,
        "metadata": metadata,
        "persistent": false,
        "always_on": false,
        "boot_path": "bubblewrap",
        "boot_ms": row.boot_ms,
        "created_at": ts(Some(row.created_at)),
        "updated_at": ts(Some(row.updated_at)),
        "started_at": ts(row.started_at),
        "ready_at": ts(row.ready_at),
        "stopped_at": ts(row.stopped_at),
        "destroyed_at": ts(row.destroyed_at),
    })
}

/// A sandbox of a project boots with its secrets (binding credentials,
/// secret variables) and its commands can print them: creating, resuming
/// or running one needs `env:reveal`, as reading those values does.
fn require_reveal(principal: &Principal, project: Option<&str>) -> ApiResult<()> {
    if project.is_some() {
        principal.require("env:reveal")?;
    }
    Ok(())
}

async fn load(state: &AppState, principal: &Principal, id: &str) -> ApiResult<SandboxRow> {
    state
        .store()?
        .sandbox(&principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("sandbox", id))
}

/// Boots a sandbox (workspace, variables) and marks it running.
async fn start(state: &AppState, row: &SandboxRow) -> ApiResult<SandboxRow> {
    let began = std::time::Instant::now();
    let sandboxes = state.sandboxes()?;
    let store = state.store()?;
    let booted = async {
        sandboxes
            .prepare(&row.id)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok::<_, ApiError>(state.boot_sandbox(row).await?)
    }
    .await;
    let (next, error) = match &booted {
        Ok(_) => ("running", None),
        Err(e) => ("error", Some(e.message.clone())),
    };
    let boot_ms = began.elapsed().as_millis() as i32;
    let row = store
        .set_sandbox_state(
            &row.tenant_id,
            &row.id,
            next,
            error.as_deref(),
            Some(boot_ms),
        )
        .await?
        .ok_or_else(|| ApiError::not_found("sandbox", &row.id))?;
    booted?;
    Ok(row)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CreateBody {
    template_id: Option<String>,
    template: Option<String>,
    image: Option<String>,
    name: Option<String>,
    env: Option<Value>,
    metadata: Option<Value>,
    tags: Option<Vec<String>>,
    project_id: Option<String>,
    project_slug: Option<String>,
    environment: Option<String>,
    environment_id: Option<String>,
    env_id: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let sandboxes = state.sandboxes()?;
    if let Err(e) = sandboxes.available() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SANDBOXES_UNAVAILABLE",
            e.to_string(),
        ));
    }
    let store = state.store()?;
    let env = object_entries("env", body.env.as_ref())?;
    let metadata = match body.metadata {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(ApiError::invalid_field("metadata", "must be an object")),
    };
    if let Some(name) = &body.name {
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                "name",
                "must be 1 to 128 characters without control characters",
            ));
        }
    }
    let tags = body.tags.unwrap_or_default();
    // The project and environment whose variables it boots with.
    let project = match body.project_id.as_deref().or(body.project_slug.as_deref()) {
        Some(reference) => Some(load_project(store, &principal, reference).await?),
        None => None,
    };
    let wanted = body
        .environment
        .as_deref()
        .or(body.environment_id.as_deref())
        .or(body.env_id.as_deref())
        .or_else(|| metadata["environment"].as_str());
    require_reveal(&principal, project.as_ref().map(|p| p.id.as_str()))?;
    let environment = match &project {
        Some(project) => {
            let reference = match wanted {
                Some(w) => Some(w),
                None if project
                    .environments
                    .iter()
                    .any(|e| e.name == DEFAULT_ENVIRONMENT) =>
                {
                    Some(DEFAULT_ENVIRONMENT)
                }
                None => None,
            };
            Some(resolve_environment(store, project, reference).await?)
        }
        None if wanted.is_some() => {
            return Err(ApiError::invalid_field(
                "environment",
                "applies to a sandbox of a project; give project_id too",
            ))
        }
        None => None,
    };
    let id = IdKind::Sandbox.mint();
    let template = body
        .template_id
        .or(body.template)
        .or(body.image)
        .unwrap_or_else(|| "miosa-sandbox".to_string());
    let row = match store
        .create_sandbox(&NewSandbox {
            id: &id,
            tenant_id: &principal.tenant_id,
            project_id: project.as_ref().map(|p| p.id.as_str()),
            environment_id: environment.as_ref().map(|e| e.id.as_str()),
            name: body.name.as_deref(),
            template_id: &template,
            sealed_env: &state.seal_sandbox_env("env", &id, &env)?,
            metadata: &metadata,
            tags: &tags,
        })
        .await
    {
        Ok(row) => row,
        Err(StoreError::Conflict { .. }) => {
            return Err(ApiError::conflict(
                "SANDBOX_NAME_TAKEN",
                "a live sandbox already has this name",
            )
            .with_details(json!({ "field": "name" })))
        }
        Err(e) => return Err(e.into()),
    };
    let row = start(&state, &row).await?;
    tracing::info!(sandbox = row.id, project = ?row.project_id, environment = ?row.environment, "sandbox created");
    Ok(data(StatusCode::CREATED, view(&row)))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    Ok(data(
        StatusCode::OK,
        view(&load(&state, &principal, &id).await?),
    ))
}

pub async fn by_name(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(name): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let row = state
        .store()?
        .sandbox_by_name(&principal.tenant_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("sandbox", &name))?;
    Ok(data(StatusCode::OK, view(&row)))
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    state: Option<String>,
    tags: Option<String>,
    project_id: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let store = state.store()?;
    let tags: Vec<String> = query
        .tags
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let project = project_id_of(store, &principal, query.project_id.as_deref()).await?;
    let rows = store
        .sandboxes(
            &principal.tenant_id,
            query.state.as_deref().filter(|s| !s.is_empty()),
            &tags,
            project.as_deref(),
        )
        .await?;
    let total = rows.len() as u64;
    Ok(super::list(
        rows.iter().map(view).collect(),
        1,
        total.max(1) as u32,
        total,
    ))
}

fn readiness_view(row: &SandboxRow) -> Value {
    let ready = row.state == "running";
    let status = if ready { "ready" } else { "not_ready" };
    let components: Map<String, Value> = [
        "command_agent",
        "process_control",
        "resource_contract",
        "clock",
        "identity",
        "durability",
        "filesystem",
        "internal_probe",
    ]
    .into_iter()
    .map(|c| (c.to_string(), json!(status)))
    .collect();
    json!({ "ready": ready, "state": row.state, "status": status, "components": components })
}

pub async fn readiness(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let row = load(&state, &principal, &id).await?;
    Ok(data(StatusCode::OK, readiness_view(&row)))
}

fn sse_frame(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn sse(frames: impl futures_util::Stream<Item = String> + Send + 'static) -> Response {
    let body = Body::from_stream(futures_util::StreamExt::map(frames, |f| {
        Ok::<_, std::convert::Infallible>(f)
    }));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `event: ready` once the sandbox runs (at once if it does), `event:
/// timeout` if it does not within 30 s.
pub async fn readiness_stream(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let first = load(&state, &principal, &id).await?;
    let frames = stream::unfold(Some(first), move |row| {
        let (state, principal) = (state.clone(), principal.clone());
        async move {
            let mut row = row?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                if row.state == "running" {
                    return Some((sse_frame("ready", &readiness_view(&row)), None));
                }
                if matches!(
                    row.state.as_str(),
                    "destroyed" | "error" | "stopped" | "paused"
                ) || tokio::time::Instant::now() > deadline
                {
                    return Some((sse_frame("timeout", &readiness_view(&row)), None));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                row = load(&state, &principal, &row.id).await.ok()?;
            }
        }
    });
    Ok(sse(frames))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ExecBody {
    command: Option<String>,
    cwd: Option<String>,
    working_dir: Option<String>,
    env: Option<Value>,
    timeout: Option<f64>,
    timeout_sec: Option<f64>,
}

/// A command ready to run: the sandbox, its variables, the command.
struct Prepared {
    row: SandboxRow,
    /// Its volumes, per their live leases.
    mounts: Vec<mds_runtime::jail::Mount>,
    env: Vec<(String, String)>,
    command: String,
    cwd: Option<String>,
    timeout: Duration,
}

async fn prepare_exec(
    state: &AppState,
    principal: &Principal,
    id: &str,
    body: ExecBody,
) -> ApiResult<Prepared> {
    principal.require("projects:write")?;
    let command = body
        .command
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| ApiError::missing_field("command"))?;
    if command.contains('\0') {
        return Err(ApiError::invalid_field("command", "cannot contain NUL"));
    }
    if command.len() > MAX_COMMAND_BYTES {
        return Err(ApiError::invalid_field(
            "command",
            format!("must be at most {MAX_COMMAND_BYTES} bytes; put longer scripts in a file"),
        ));
    }
    let timeout = body
        .timeout
        .or(body.timeout_sec)
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    if timeout > MAX_TIMEOUT_SECS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "TIMEOUT_TOO_LONG",
            format!("timeout: at most {MAX_TIMEOUT_SECS} seconds"),
        )
        .with_details(json!({ "field": "timeout", "max": MAX_TIMEOUT_SECS })));
    }
    if timeout.is_nan() || timeout <= 0.0 {
        return Err(ApiError::invalid_field(
            "timeout",
            "must be a positive number of seconds",
        ));
    }
    let cwd = body.cwd.or(body.working_dir);
    if cwd.as_deref().is_some_and(|c| c.contains('\0')) {
        return Err(ApiError::invalid_field("cwd", "cannot contain NUL"));
    }
    let extra = object_entries("env", body.env.as_ref())?;
    let row = load(state, principal, id).await?;
    require_reveal(principal, row.project_id.as_deref())?;
    match row.state.as_str() {
        "running" => {}
        "destroyed" => {
            return Err(ApiError::conflict(
                "SANDBOX_DESTROYED",
                format!("sandbox {id} was destroyed; create a new one"),
            ))
        }
        "creating" => {
            return Err(
                ApiError::conflict("SANDBOX_STARTING", "the sandbox is starting")
                    .retry_after(Duration::from_millis(200)),
            )
        }
        other => {
            return Err(ApiError::conflict(
                "SANDBOX_NOT_RUNNING",
                format!("sandbox {id} is {other}; resume it first"),
            ))
        }
    }
    let booted = state.boots.lock().expect("never poisoned").get(id).cloned();
    // After a restart of mds, the first command boots the sandbox again.
    let booted = match booted {
        Some(env) => env,
        None => {
            state
                .sandboxes()?
                .prepare(id)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            state.boot_sandbox(&row).await?
        }
    };
    let mut env: Vec<(String, String)> = booted
        .iter()
        .filter(|(k, _)| !extra.contains_key(k))
        .cloned()
        .collect();
    env.extend(extra);
    let mounts = state.sandbox_mounts(id).await?;
    Ok(Prepared {
        row,
        mounts,
        env,
        command,
        cwd,
        timeout: Duration::from_secs_f64(timeout),
    })
}

pub async fn exec(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<ExecBody>,
) -> ApiResult<Response> {
    let p = prepare_exec(&state, &principal, &id, body).await?;
    let finished = state
        .sandboxes()?
        .run(
            &p.row.id,
            Command {
                env: p.env,
                cwd: p.cwd.as_deref(),
                command: &p.command,
                timeout: p.timeout,
                mounts: p.mounts,
            },
            None,
        )
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(data(
        StatusCode::OK,
        json!({
            "stdout": finished.stdout,
            "stderr": finished.stderr,
            "exit_code": finished.exit_code,
            "exitCode": finished.exit_code,
            "duration_ms": finished.duration_ms,
            "timed_out": finished.timed_out,
            "truncated": finished.truncated,
        }),
    ))
}

/// The same command as a stream: `stdout`/`stderr` events of `{"line"}`,
/// then `exit` with `{"exit_code"}`.
pub async fn exec_stream(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<ExecBody>,
) -> ApiResult<Response> {
    let p = prepare_exec(&state, &principal, &id, body).await?;
    let (tx, rx) = mpsc::channel::<Output>(256);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let runner = state.clone();
    tokio::spawn(async move {
        let finished = match runner.sandboxes() {
            Ok(sandboxes) => sandboxes
                .run(
                    &p.row.id,
                    Command {
                        env: p.env,
                        cwd: p.cwd.as_deref(),
                        command: &p.command,
                        timeout: p.timeout,
                        mounts: p.mounts,
                    },
                    Some(tx),
                )
                .await
                .ok(),
            Err(_) => None,
        };
        let _ = done_tx.send(finished);
    });
    let lines = stream::unfold(rx, |mut rx| async move {
        let output = rx.recv().await?;
        let frame = match output {
            Output::Stdout(line) => sse_frame("stdout", &json!({ "line": line })),
            Output::Stderr(line) => sse_frame("stderr", &json!({ "line": line })),
        };
        Some((frame, rx))
    });
    let exit = stream::once(async move {
        let exit = match done_rx.await.ok().flatten() {
            Some(f) => {
                json!({ "exit_code": f.exit_code, "duration_ms": f.duration_ms, "timed_out": f.timed_out })
            }
            None => json!({ "exit_code": -1, "error": "the command could not run" }),
        };
        sse_frame("exit", &exit)
    });
    Ok(sse(futures_util::StreamExt::chain(lines, exit)))
}

/// Ends a sandbox's processes and records `state` (stopped or paused).
async fn halt(state: &AppState, principal: &Principal, id: &str, to: &str) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let row = load(state, principal, id).await?;
    if row.state == "destroyed" {
        return Err(ApiError::conflict(
            "SANDBOX_DESTROYED",
            format!("sandbox {id} was destroyed"),
        ));
    }
    state.sandboxes()?.kill_all(id);
    state.boots.lock().expect("never poisoned").remove(id);
    state.store()?.release_holder(id).await?;
    let row = state
        .store()?
        .set_sandbox_state(&principal.tenant_id, id, to, None, None)
        .await?
        .ok_or_else(|| ApiError::not_found("sandbox", id))?;
    Ok(data(StatusCode::OK, view(&row)))
}

pub async fn stop(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    halt(&state, &principal, &id, "stopped").await
}

pub async fn pause(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    halt(&state, &principal, &id, "paused").await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ResumeBody {
    env: Option<Value>,
    environment: Option<String>,
    environment_id: Option<String>,
    env_id: Option<String>,
}

/// Boots the sandbox again: variables are resolved anew (a changed
/// binding or variable reaches it now), with `env` merged into its own.
pub async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<ResumeBody>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let store = state.store()?;
    let row = load(&state, &principal, &id).await?;
    require_reveal(&principal, row.project_id.as_deref())?;
    if row.state == "destroyed" {
        return Err(ApiError::conflict(
            "SANDBOX_DESTROYED",
            format!("sandbox {id} was destroyed; create a new one"),
        ));
    }
    let extra = object_entries("env", body.env.as_ref())?;
    if !extra.is_empty() {
        let mut env = state.open_sandbox_env(&row.id, &row.sealed_env)?;
        env.extend(extra);
        store
            .set_sandbox_env(
                &principal.tenant_id,
                &id,
                &state.seal_sandbox_env("env", &id, &env)?,
            )
            .await?;
    }
    let wanted = body.environment.or(body.environment_id).or(body.env_id);
    if let (Some(wanted), Some(project_id)) = (wanted, &row.project_id) {
        let project = load_project(store, &principal, project_id).await?;
        let env = resolve_environment(store, &project, Some(&wanted)).await?;
        store
            .set_sandbox_environment(&principal.tenant_id, &id, &env.id)
            .await?;
    }
    state.sandboxes()?.kill_all(&id);
    let row = load(&state, &principal, &id).await?;
    let row = start(&state, &row).await?;
    Ok(data(StatusCode::OK, view(&row)))
}

/// Removes the sandbox's processes and workspace, and nothing else.
pub async fn destroy(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let row = load(&state, &principal, &id).await?;
    if row.state != "destroyed" {
        state.boots.lock().expect("never poisoned").remove(&id);
        state
            .sandboxes()?
            .remove(&id)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        // Its volumes are free for the next holder; their data stays.
        state.store()?.release_holder(&id).await?;
    }
    let row = state
        .store()?
        .set_sandbox_state(&principal.tenant_id, &id, "destroyed", None, None)
        .await?
        .ok_or_else(|| ApiError::not_found("sandbox", &id))?;
    tracing::info!(sandbox = id, "sandbox destroyed");
    Ok(data(StatusCode::OK, view(&row)))
}

fn env_list(state: &AppState, row: &SandboxRow, reveal: bool) -> ApiResult<Value> {
    let vars: Vec<Value> = state
        .open_sandbox_env(&row.id, &row.sealed_env)?
        .into_iter()
        .map(|(key, value)| {
            let secret = mds_core::vars::looks_secret(&key);
            let mut var = json!({
                "key": key,
                "preview": mds_core::vars::preview(&value, secret),
                "encrypted": true,
                "source": "sandbox",
            });
            if reveal {
                var["value"] = json!(value);
            }
            var
        })
        .collect();
    Ok(json!({ "vars": vars }))
}

pub async fn env_get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("env:read")?;
    let row = load(&state, &principal, &id).await?;
    let reveal = principal.scopes.allows("env:reveal");
    Ok(data(StatusCode::OK, env_list(&state, &row, reveal)?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EnvBody {
    vars: Option<Vec<EnvVar>>,
}

#[derive(Deserialize)]
pub struct EnvVar {
    key: String,
    value: String,
}

/// `PUT /sandboxes/{id}/env {"vars": [{key, value}]}`: sets (merges) the
/// sandbox's own variables, for its next boot.
pub async fn env_set(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<EnvBody>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let row = load(&state, &principal, &id).await?;
    let vars = body.vars.unwrap_or_default();
    for var in &vars {
        check_entry("vars", &var.key, &var.value)?;
    }
    may_steer_programs(&principal, vars.iter().map(|v| v.key.as_str()))?;
    let mut env = state.open_sandbox_env(&row.id, &row.sealed_env)?;
    env.extend(vars.into_iter().map(|v| (v.key, v.value)));
    let sealed = state.seal_sandbox_env("vars", &id, &env)?;
    if !state
        .store()?
        .set_sandbox_env(&principal.tenant_id, &id, &sealed)
        .await?
    {
        return Err(ApiError::conflict(
            "SANDBOX_DESTROYED",
            format!("sandbox {id} was destroyed"),
        ));
    }
    let row = load(&state, &principal, &id).await?;
    let reveal = principal.scopes.allows("env:reveal");
    Ok(data(StatusCode::OK, env_list(&state, &row, reveal)?))
}

#[derive(Deserialize)]
pub struct EnvKeyPath {
    id: String,
    key: String,
}

pub async fn env_delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<EnvKeyPath>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let row = load(&state, &principal, &path.id).await?;
    let mut env = state.open_sandbox_env(&row.id, &row.sealed_env)?;
    if env.remove(&path.key).is_none() {
        return Err(ApiError::not_found("variable", &path.key));
    }
    state
        .store()?
        .set_sandbox_env(
            &principal.tenant_id,
            &path.id,
            &state.seal_sandbox_env("env", &path.id, &env)?,
        )
        .await?;
    Ok(super::deleted(&path.key))
}
