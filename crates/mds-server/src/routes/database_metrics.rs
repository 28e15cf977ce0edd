//! `GET /databases/{id}/metrics?window=5m|1h|24h|7d`: each binding's
//! current numbers, read from its engine now (Postgres: size, sessions,
//! transaction and block counters; a managed Redis: memory, clients,
//! keys, command counters; a bucket: objects and bytes). No history is kept, so every window answers
//! one point per binding; the window is checked and echoed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use mds_api_types::metrics::{BindingMetrics, DatabaseMetrics, MetricPoint};
use mds_control::attach::load_service;
use mds_control::is_running;
use mds_core::kinds::ServiceKind;
use serde::Deserialize;

use super::data;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{PathParams, QueryParams};
use crate::state::AppState;

const WINDOWS: &[&str] = &["5m", "1h", "24h", "7d"];

#[derive(Deserialize)]
pub struct MetricsQuery {
    window: Option<String>,
}

pub async fn metrics(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<MetricsQuery>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let window = query.window.unwrap_or_else(|| "1h".to_string());
    if !WINDOWS.contains(&window.as_str()) {
        return Err(ApiError::invalid_field(
            "window",
            format!("must be one of {WINDOWS:?}, got {window:?}"),
        ));
    }
    let service = load_service(state.control(), &principal, &id).await?;
    let reconciler = state.reconciler()?;
    let mut bindings = Vec::new();
    for binding in state.store()?.bindings(&service.id).await? {
        let (points, error) = if !is_running(&binding) {
            (Vec::new(), Some(format!("binding is {}", binding.state)))
        } else {
            match reconciler.binding_metrics(&service, &binding).await {
                Ok(values) => {
                    let values = values.into_iter().map(|(k, v)| (k.to_string(), v));
                    let point = MetricPoint {
                        t: Utc::now(),
                        values: values.collect(),
                    };
                    (vec![point], None)
                }
                Err(e) => {
                    tracing::warn!(binding = binding.id, "metrics: {e}");
                    (Vec::new(), Some(e.to_string()))
                }
            }
        };
        bindings.push(BindingMetrics {
            binding_id: binding.id,
            environment: binding.environment_name,
            environment_id: binding.environment_id,
            state: binding.state,
            points,
            error,
        });
    }
    let engine = service
        .kind
        .parse::<ServiceKind>()
        .map_or_else(|_| service.kind.clone(), |k| k.engine_label().to_string());
    Ok(data(
        StatusCode::OK,
        DatabaseMetrics {
            database_id: service.id,
            engine,
            window,
            resolution: "current".to_string(),
            bindings,
        },
    ))
}
