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
    // The pooler is reported, not required: DATABASE_URL_UNPOOLED and
    // the API work without it, and supervision brings it back.
    if let Some(pooler) = state.reconciler().ok().and_then(|r| r.pooler()) {
        engines.insert("pooler".to_string(), pooler.status().label().to_string());
    }
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
            backups: state.backups().ok().map(|b| mds_api_types::BackupHealth {
                repository: b.repo.location().to_string(),
                same_disk_as_data: b.same_disk_as_data(),
                warning: b.disk_warning(),
                problems: b.problems(),
                pitr: b.archive.is_some(),
            }),
        }),
    )
        .into_response()
}

/// Prometheus text: requests by status class, engine status, bindings by
/// kind and state. Counts only; nothing secret.
pub async fn metrics(State(state): State<AppState>) -> Response {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP mds_http_requests_total HTTP requests served, by status class."
    );
    let _ = writeln!(out, "# TYPE mds_http_requests_total counter");
    for (i, count) in state.server().requests.0.iter().enumerate() {
        let _ = writeln!(
            out,
            "mds_http_requests_total{{class=\"{}xx\"}} {}",
            i + 1,
            count.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    let up = state
        .engine()
        .is_some_and(|e| e.status() == mds_engines::EngineStatus::Running)
        && state.is_connected();
    let _ = writeln!(
        out,
        "# HELP mds_postgres_up Whether the control-plane database answers."
    );
    let _ = writeln!(out, "# TYPE mds_postgres_up gauge");
    let _ = writeln!(out, "mds_postgres_up {}", u8::from(up));
    if let Ok(store) = state.store() {
        if let Ok(counts) = store.binding_counts().await {
            let _ = writeln!(
                out,
                "# HELP mds_bindings Data-service bindings, by kind and state."
            );
            let _ = writeln!(out, "# TYPE mds_bindings gauge");
            for (kind, binding_state, n) in counts {
                let _ = writeln!(
                    out,
                    "mds_bindings{{kind=\"{kind}\",state=\"{binding_state}\"}} {n}"
                );
            }
        }
        if let Ok((chunks, bytes)) = store.blob_usage().await {
            let _ = writeln!(
                out,
                "# HELP mds_storage_chunks Blob chunks stored (each once, however many objects share it)."
            );
            let _ = writeln!(out, "# TYPE mds_storage_chunks gauge");
            let _ = writeln!(out, "mds_storage_chunks {chunks}");
            let _ = writeln!(out, "# HELP mds_storage_bytes Bytes of blob chunks stored.");
            let _ = writeln!(out, "# TYPE mds_storage_bytes gauge");
            let _ = writeln!(out, "mds_storage_bytes {bytes}");
        }
    }
    if let Some(pooler) = state.reconciler().ok().and_then(|r| r.pooler()) {
        write_pool_metrics(&mut out, &state, pooler).await;
    }
    if let Ok(backups) = state.backups() {
        let _ = writeln!(
            out,
            "# HELP mds_backup_drill_failures_total Drills whose restore did not match what was recorded."
        );
        let _ = writeln!(out, "# TYPE mds_backup_drill_failures_total counter");
        let _ = writeln!(
            out,
            "mds_backup_drill_failures_total {}",
            backups.drill_failures()
        );
        if let Ok(last) = state.store().map(|s| s.last_restore_points()) {
            if let Ok(last) = last.await {
                let _ = writeln!(
                    out,
                    "# HELP mds_backup_last_success_timestamp_seconds When each environment's newest complete restore point finished."
                );
                let _ = writeln!(
                    out,
                    "# TYPE mds_backup_last_success_timestamp_seconds gauge"
                );
                for (project, environment, at) in last {
                    let _ = writeln!(
                        out,
                        "mds_backup_last_success_timestamp_seconds{{project=\"{project}\",environment=\"{environment}\"}} {}",
                        at.timestamp()
                    );
                }
            }
        }
    }
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

/// The pooler's state, and each binding's pool while it runs, labelled
/// by binding, project and environment (and the database it serves).
async fn write_pool_metrics(out: &mut String, state: &AppState, pooler: &mds_engines::Pooler) {
    use std::fmt::Write;
    let up = pooler.status() == mds_engines::EngineStatus::Running;
    let _ = writeln!(
        out,
        "# HELP mds_pooler_up Whether the connection pooler runs."
    );
    let _ = writeln!(out, "# TYPE mds_pooler_up gauge");
    let _ = writeln!(out, "mds_pooler_up {}", u8::from(up));
    let _ = writeln!(
        out,
        "# HELP mds_pooler_info The pooler's version and whether it limits clients per binding."
    );
    let _ = writeln!(out, "# TYPE mds_pooler_info gauge");
    let _ = writeln!(
        out,
        "mds_pooler_info{{version=\"{}\",client_limit=\"{}\",prepared_statements=\"{}\"}} 1",
        pooler.version().replace(['"', '\\'], ""),
        pooler.features().client_limit,
        pooler.features().prepared_statements
    );
    let (Ok(pools), Ok(labels)) = (
        pooler.pools().await,
        match state.store() {
            Ok(store) => store.postgres_binding_labels().await.map_err(|_| ()),
            Err(_) => Err(()),
        },
    ) else {
        return;
    };
    type Gauge = (
        &'static str,
        &'static str,
        fn(&mds_engines::PoolStats) -> f64,
    );
    let gauges: [Gauge; 5] = [
        (
            "mds_pool_clients_active",
            "Client connections paired with a server connection or idle in the pool.",
            |p| p.clients_active as f64,
        ),
        (
            "mds_pool_clients_waiting",
            "Client connections waiting for a server connection.",
            |p| p.clients_waiting as f64,
        ),
        (
            "mds_pool_servers_active",
            "Server connections in use by a client.",
            |p| p.servers_active as f64,
        ),
        (
            "mds_pool_servers_idle",
            "Server connections open and free.",
            |p| p.servers_idle as f64,
        ),
        (
            "mds_pool_max_wait_seconds",
            "How long the oldest waiting client has waited.",
            |p| p.max_wait_ms as f64 / 1000.0,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for pool in &pools {
            // A pool of a binding just deleted has no labels left: skipped.
            let Some((binding, project, environment)) = labels.get(&pool.database) else {
                continue;
            };
            let _ = writeln!(
                out,
                "{name}{{binding=\"{binding}\",project=\"{project}\",environment=\"{environment}\",database=\"{}\"}} {}",
                pool.database,
                value(pool)
            );
        }
    }
}
