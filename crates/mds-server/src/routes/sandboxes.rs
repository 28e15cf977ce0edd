//! MIOSA `/sandboxes`: ephemeral, jailed process environments that boot
//! with their project environment's variables (bindings, shared variables,
//! then their own), run commands, and go without touching any data. What
//! they do is `mds_control::sandboxes`'; here is HTTP.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::stream;
use mds_api_types::sandboxes::{CreateSandbox, Exec, ExecExit, ExecLine, ExecResult};
use mds_control::projects::project_id_of;
use mds_control::sandboxes::{readiness_view, sandbox_view, PreparedExec};
use mds_runtime::sandbox::{Command, Output};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::data;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::sse::{sse, sse_frame};
use crate::state::AppState;

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateSandbox>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let row = state.create_sandbox(&principal, body).await?;
    Ok(data(StatusCode::CREATED, sandbox_view(&row)))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let row = state.sandbox(&principal, &id).await?;
    Ok(data(StatusCode::OK, sandbox_view(&row)))
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
    Ok(data(StatusCode::OK, sandbox_view(&row)))
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
    Ok(super::list_all(rows.iter().map(sandbox_view).collect()))
}

pub async fn readiness(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let row = state.sandbox(&principal, &id).await?;
    Ok(data(StatusCode::OK, readiness_view(&row)))
}

/// `event: ready` once the sandbox runs (at once if it does), `event:
/// timeout` if it does not within 30 s.
pub async fn readiness_stream(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let first = state.sandbox(&principal, &id).await?;
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
                row = state.sandbox(&principal, &row.id).await.ok()?;
            }
        }
    });
    Ok(sse(frames))
}

async fn prepare(
    state: &AppState,
    principal: &Principal,
    id: &str,
    body: Exec,
) -> ApiResult<PreparedExec> {
    state.prepare_exec(principal, id, body).await.map_err(|e| {
        let e = ApiError::from(e);
        // Starting takes moments: worth a quick retry.
        if e.code == "SANDBOX_STARTING" {
            e.retry_after(Duration::from_millis(200))
        } else {
            e
        }
    })
}

fn command(p: &PreparedExec) -> Command<'_> {
    Command {
        env: p.env.clone(),
        cwd: p.cwd.as_deref(),
        command: &p.command,
        timeout: p.timeout,
        mounts: p.mounts.clone(),
        networked: true,
    }
}

pub async fn exec(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<Exec>,
) -> ApiResult<Response> {
    let p = prepare(&state, &principal, &id, body).await?;
    let finished = state
        .sandboxes()?
        .run(&p.sandbox_id, command(&p), None)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(data(
        StatusCode::OK,
        ExecResult {
            stdout: finished.stdout,
            stderr: finished.stderr,
            exit_code: finished.exit_code,
            exit_code_camel: finished.exit_code,
            duration_ms: finished.duration_ms,
            timed_out: finished.timed_out,
            truncated: finished.truncated,
        },
    ))
}

/// The same command as a stream: `stdout`/`stderr` events of `{"line"}`,
/// then `exit` with `{"exit_code"}`.
pub async fn exec_stream(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<Exec>,
) -> ApiResult<Response> {
    let p = prepare(&state, &principal, &id, body).await?;
    let (tx, rx) = mpsc::channel::<Output>(256);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let runner = state.clone();
    tokio::spawn(async move {
        let finished = match runner.sandboxes() {
            Ok(sandboxes) => sandboxes
                .run(&p.sandbox_id, command(&p), Some(tx))
                .await
                .ok(),
            Err(_) => None,
        };
        let _ = done_tx.send(finished);
    });
    let lines = stream::unfold(rx, |mut rx| async move {
        let frame = match rx.recv().await? {
            Output::Stdout(line) => sse_frame("stdout", &ExecLine { line }),
            Output::Stderr(line) => sse_frame("stderr", &ExecLine { line }),
        };
        Some((frame, rx))
    });
    let exit = stream::once(async move {
        let exit = match done_rx.await.ok().flatten() {
            Some(f) => ExecExit {
                exit_code: f.exit_code,
                duration_ms: Some(f.duration_ms),
                timed_out: Some(f.timed_out),
                error: None,
            },
            None => ExecExit {
                exit_code: -1,
                duration_ms: None,
                timed_out: None,
                error: Some("the command could not run".to_string()),
            },
        };
        sse_frame("exit", &exit)
    });
    Ok(sse(futures_util::StreamExt::chain(lines, exit)))
}

pub async fn stop(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let row = state.halt_sandbox(&principal, &id, "stopped").await?;
    Ok(data(StatusCode::OK, sandbox_view(&row)))
}

pub async fn pause(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let row = state.halt_sandbox(&principal, &id, "paused").await?;
    Ok(data(StatusCode::OK, sandbox_view(&row)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ResumeBody {
    env: Option<Value>,
    environment: Option<String>,
    environment_id: Option<String>,
    env_id: Option<String>,
}

/// Boots the sandbox again, with `env` merged into its own.
pub async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<ResumeBody>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let environment = body.environment.or(body.environment_id).or(body.env_id);
    let row = state
        .resume_sandbox(&principal, &id, body.env.as_ref(), environment.as_deref())
        .await?;
    Ok(data(StatusCode::OK, sandbox_view(&row)))
}

pub async fn destroy(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let row = state.destroy_sandbox(&principal, &id).await?;
    Ok(data(StatusCode::OK, sandbox_view(&row)))
}

pub async fn env_get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("env:read")?;
    let row = state.sandbox(&principal, &id).await?;
    let reveal = principal.scopes.allows("env:reveal");
    Ok(data(StatusCode::OK, state.sandbox_env(&row, reveal)?))
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
    let vars = body.vars.unwrap_or_default();
    let vars = vars.into_iter().map(|v| (v.key, v.value)).collect();
    let row = state.set_sandbox_vars(&principal, &id, vars).await?;
    let reveal = principal.scopes.allows("env:reveal");
    Ok(data(StatusCode::OK, state.sandbox_env(&row, reveal)?))
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
    state
        .unset_sandbox_var(&principal, &path.id, &path.key)
        .await?;
    Ok(super::deleted(&path.key))
}
