use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mds_api_types::Health;

use crate::state::AppState;

/// 200 once the engines run and migrations are applied; 503 before, and
/// while the database is unreachable (a managed postgres being restarted,
/// an external one down).
pub async fn healthz(State(state): State<AppState>) -> Response {
    let mut engines = BTreeMap::new();
    let engine_ok = match state.engine() {
        Some(engine) => {
            let status = engine.status();
            engines.insert("postgres".to_string(), status.label().to_string());
            status == mds_engines::EngineStatus::Running
        }
        None => {
            engines.insert("postgres".to_string(), "starting".to_string());
            false
        }
    };
    let ready = engine_ok && state.is_connected();
    let status = if ready {
        "ok"
    } else if state.is_ready() {
        "degraded"
    } else {
        "starting"
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(Health {
            status: status.to_string(),
            engines,
            migrations_applied: state.is_ready(),
        }),
    )
        .into_response()
}
