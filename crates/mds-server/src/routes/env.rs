//! `GET /projects/{p}/env`: what a process of (project, environment) gets at
//! boot, each variable with its provenance. Values only with `env:reveal`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::{Binding, EnvEntry, EnvSource, ResolvedEnv};
use mds_core::env::{resolve_env, Candidate, Layer};
use mds_core::vars;
use mds_store::{EnvironmentRow, ProjectRow, VariableScope};
use serde::Deserialize;

use super::data;
use super::environments::resolve_environment;
use super::projects::load_project;
use super::variables::open_variable;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_bool, PathParams, QueryParams};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct EnvQuery {
    env: Option<String>,
    environment: Option<String>,
    reveal: Option<String>,
    /// The data service booting, whose own variables form the service layer.
    service: Option<String>,
}

fn source(c: &Candidate) -> EnvSource {
    EnvSource {
        layer: c.layer.label().to_string(),
        origin: c.origin.clone(),
    }
}

pub async fn resolve(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:read")?;
    let reveal = parse_bool("reveal", query.reveal.as_deref())?;
    if reveal {
        principal.require("env:reveal")?;
    }
    let store = state.store()?;
    let project = load_project(store, &principal, &project).await?;
    let env = resolve_environment(
        store,
        &project,
        query.env.as_deref().or(query.environment.as_deref()),
    )
    .await?;

    let (mut candidates, pending) = boot_candidates(&state, &project, &env).await?;
    if let Some(reference) = &query.service {
        let service = store
            .data_services(&project.id)
            .await?
            .into_iter()
            .find(|s| &s.id == reference || s.name.eq_ignore_ascii_case(reference))
            .ok_or_else(|| ApiError::not_found("service", reference))?;
        for (name, value, secret) in
            super::services::service_layer(&state, &project, &service, &env).await?
        {
            candidates.push(Candidate::new(
                Layer::Service,
                &service.name,
                &name,
                &value,
                secret,
            ));
        }
    }
    if reveal {
        tracing::info!(key = %principal.key_id, project = project.id, environment = env.name, "environment revealed");
    }
    let variables = resolve_env(candidates)
        .into_iter()
        .map(|r| EnvEntry {
            preview: vars::preview(&r.winner.value, r.winner.secret),
            value: reveal.then(|| r.winner.value.clone()),
            name: r.winner.name.clone(),
            secret: r.winner.secret,
            source: source(&r.winner),
            overridden: r.overridden.iter().map(source).collect(),
        })
        .collect();
    Ok(data(
        StatusCode::OK,
        ResolvedEnv {
            project_id: project.id.clone(),
            environment: env.name.clone(),
            environment_id: env.id.clone(),
            variables,
            pending,
        },
    ))
}

/// What every process of (project, environment) gets before its own
/// layers: the platform names, the environment's running bindings and its
/// shared variables. Also the bindings not running yet (left out).
pub async fn boot_candidates(
    state: &AppState,
    project: &ProjectRow,
    env: &EnvironmentRow,
) -> ApiResult<(Vec<Candidate>, Vec<Binding>)> {
    let store = state.store()?;
    let mut candidates = vec![
        Candidate::new(
            Layer::Platform,
            "mds",
            "MIOSA_PROJECT_ID",
            &project.id,
            false,
        ),
        Candidate::new(
            Layer::Platform,
            "mds",
            "MIOSA_ENVIRONMENT",
            &env.name,
            false,
        ),
    ];
    let mut pending = Vec::new();
    let reconciler = state.reconciler()?;
    for (service, binding) in store.environment_bindings(&env.id).await? {
        if binding.state != "running" {
            pending.push(super::data_services::binding_view(&binding));
            continue;
        }
        let variables = reconciler
            .binding_variables(&service, &binding)
            .map_err(ApiError::internal)?;
        for (name, value, secret) in variables {
            candidates.push(Candidate::new(
                Layer::Binding,
                &service.name,
                &name,
                &value,
                secret,
            ));
        }
    }
    let shared = VariableScope::Shared {
        environment_id: &env.id,
    };
    for row in store.variables(shared).await? {
        let value = open_variable(state, shared, &row)?;
        candidates.push(Candidate::new(
            Layer::Shared,
            "shared",
            &row.name,
            &value,
            row.is_secret,
        ));
    }
    Ok((candidates, pending))
}
