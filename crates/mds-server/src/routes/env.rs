//! `GET /projects/{p}/env`: what a process of (project, environment) gets at
//! boot, each variable with its provenance. Values only with `env:reveal`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::{EnvEntry, EnvSource, ResolvedEnv};
use mds_control::boot::{Place, Target};
use mds_control::projects::load_environment;
use mds_core::env::Candidate;
use mds_core::vars;
use serde::Deserialize;

use super::data;
use crate::audit::revealed;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_bool, PathParams, QueryParams};
use crate::state::AppState;
use crate::views::binding_view;

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
    let environment = query.env.as_deref().or(query.environment.as_deref());
    let (project, env) = load_environment(store, &principal, &project, environment).await?;
    let service = match &query.service {
        Some(reference) => Some(
            store
                .data_services(&project.id)
                .await?
                .into_iter()
                .find(|s| &s.id == reference || s.name.eq_ignore_ascii_case(reference))
                .ok_or_else(|| ApiError::not_found("service", reference))?,
        ),
        None => None,
    };
    let place = Place {
        project: &project,
        env: &env,
    };
    let target = Target::Environment {
        service: service.as_ref(),
    };
    let assembled = state.boot_env(Some(place), target).await?;
    if reveal {
        tracing::info!(key = %principal.key_id, project = project.id, environment = env.name, "environment revealed");
    }
    let variables: Vec<EnvEntry> = assembled
        .variables
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
    let names: Vec<String> = if reveal {
        variables
            .iter()
            .map(|v: &EnvEntry| v.name.clone())
            .collect()
    } else {
        Vec::new()
    };
    let credentials = store
        .environment_bindings(&env.id)
        .await?
        .into_iter()
        .filter(|(_, b)| mds_control::is_running(b))
        .map(|(service, b)| mds_api_types::CredentialAge {
            service: service.name,
            kind: service.kind,
            made_at: b.credentials_at.unwrap_or(b.created_at),
            rotations: b.credential_generation,
            previous_valid_until: b.previous_until,
        })
        .collect();
    let response = data(
        StatusCode::OK,
        ResolvedEnv {
            project_id: project.id.clone(),
            environment: env.name.clone(),
            environment_id: env.id.clone(),
            variables,
            pending: assembled.pending.iter().map(binding_view).collect(),
            credentials,
        },
    );
    Ok(if reveal {
        revealed(response, Some(&project.id), names)
    } else {
        response
    })
}
