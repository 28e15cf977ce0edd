//! Rows as the wire shows them: the conversions from `mds_store` rows to
//! `mds_api_types` views that more than one route answers with.

use mds_api_types::services::ConnectionTest;
use mds_api_types::{Binding, DataService, Environment, Pool, Project, Variable};
use mds_core::kinds::{BindingState, Desired, ServiceKind};
use mds_core::vars;
use mds_provision::{binding_desired, binding_state};
use mds_store::{
    BindingRow, DataServiceRow, EnvironmentRow, ProjectRow, VariableRow, VariableScope,
};

use crate::error::ApiResult;
use crate::state::AppState;

pub fn environment_view(row: EnvironmentRow) -> Environment {
    Environment {
        data: mds_control::previews::data::view(&row),
        rotate_every_secs: row.rotate_every_secs,
        rotate_grace_secs: row.rotate_grace_secs,
        id: row.id,
        project_id: row.project_id,
        name: row.name,
        slug: row.slug,
        kind: row.kind,
        is_default: row.is_default,
        created_at: row.created_at,
        updated_at: row.updated_at,
        expires_at: row.expires_at,
    }
}

pub fn project_view(row: &ProjectRow) -> Project {
    let attribution = serde_json::from_value(row.attribution.clone()).unwrap_or_default();
    let default_environment_id = row
        .environments
        .iter()
        .find(|e| e.is_default)
        .map(|e| e.id.clone());
    Project {
        id: row.id.clone(),
        name: row.name.clone(),
        slug: row.slug.clone(),
        description: row.description.clone(),
        tenant_id: row.tenant_id.clone(),
        workspace_id: row.workspace_id.clone(),
        metadata: row.metadata.clone(),
        default_environment_id,
        network_egress: row.network_egress.clone(),
        environments: row
            .environments
            .iter()
            .cloned()
            .map(environment_view)
            .collect(),
        attribution,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

pub fn binding_view(row: &BindingRow) -> Binding {
    Binding {
        id: row.id.clone(),
        environment: row.environment_name.clone(),
        environment_id: row.environment_id.clone(),
        state: row.state.clone(),
        desired: row.desired.clone(),
        last_error: row.last_error.clone(),
        resource: row.resource_name.clone(),
        ready_at: row.ready_at,
        pool: None,
    }
}

/// Fills the `pool` of each Postgres binding in the views: its settings,
/// and the pooler's numbers while it runs (one console call for the lot).
/// Each view comes with the binding rows it was made from.
pub async fn fill_pools(state: &AppState, views: &mut [(&[BindingRow], &mut DataService)]) {
    let Ok(reconciler) = state.reconciler() else {
        return;
    };
    if !views
        .iter()
        .any(|(_, view)| view.kind == ServiceKind::Postgres.as_str())
    {
        return;
    }
    let pooler = reconciler.pooler();
    let running = pooler.is_some_and(|p| p.status() == mds_engines::EngineStatus::Running);
    let stats = match pooler {
        Some(pooler) if running => pooler.pools().await.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "reading pool numbers");
            Vec::new()
        }),
        _ => Vec::new(),
    };
    for (rows, view) in views.iter_mut() {
        if view.kind != ServiceKind::Postgres.as_str() {
            continue;
        }
        for binding in view.bindings.iter_mut() {
            let Some(row) = rows.iter().find(|r| r.id == binding.id) else {
                continue;
            };
            let numbers = stats.iter().find(|s| s.database == row.resource_name);
            // A pool nobody has used yet has no line: zeros.
            let number =
                |f: fn(&mds_engines::PoolStats) -> i64| running.then(|| numbers.map_or(0, f));
            binding.pool = Some(Pool {
                mode: row.pool_mode.clone(),
                size: reconciler.pool_size(row),
                max_clients: reconciler.pool_client_limit(row),
                pooled: reconciler.is_pooled(row),
                clients_active: number(|s| s.clients_active),
                clients_waiting: number(|s| s.clients_waiting),
                servers_active: number(|s| s.servers_active),
                servers_idle: number(|s| s.servers_idle),
                max_wait_ms: number(|s| s.max_wait_ms),
            });
        }
    }
}

/// One state for the whole service, from its bindings'.
/// A binding in a state or with a desire this server does not know counts
/// as `error`: it is not acted on.
fn aggregate_state(service: &DataServiceRow, bindings: &[BindingRow]) -> &'static str {
    let states: Vec<Option<(BindingState, Desired)>> = bindings
        .iter()
        .map(|b| Some((binding_state(b).ok()?, binding_desired(b).ok()?)))
        .collect();
    if service.deleting {
        "deleting"
    } else if states
        .iter()
        .any(|s| matches!(s, None | Some((BindingState::Error, _))))
    {
        "error"
    } else if states.is_empty()
        || states
            .iter()
            .flatten()
            .any(|(state, desired)| desired.settled_state() != Some(*state))
    {
        "provisioning"
    } else if states
        .iter()
        .flatten()
        .all(|(state, _)| *state == BindingState::Stopped)
    {
        "stopped"
    } else {
        "running"
    }
}

pub fn service_view(
    tenant_id: &str,
    service: &DataServiceRow,
    bindings: &[BindingRow],
) -> DataService {
    let state = aggregate_state(service, bindings);
    DataService {
        id: service.id.clone(),
        project_id: (!service.standalone).then(|| service.project_id.clone()),
        standalone: service.standalone,
        tenant_id: tenant_id.to_string(),
        kind: service.kind.clone(),
        name: service.name.clone(),
        // A standalone service injects nothing until attached.
        env_prefix: if service.standalone {
            String::new()
        } else {
            service.env_prefix.clone()
        },
        environment_id: service.environment_id.clone(),
        state: state.to_string(),
        bindings: bindings.iter().map(binding_view).collect(),
        engine: service
            .kind
            .parse::<ServiceKind>()
            .map_or_else(|_| service.kind.clone(), |k| k.engine_label().to_string()),
        engine_version: service.config["engine_version"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        region: "local".to_string(),
        connection_test: (state == "running").then(|| ConnectionTest {
            status: "ok".to_string(),
        }),
        created_at: service.created_at,
        updated_at: service.updated_at,
    }
}

pub fn variable_view(
    state: &AppState,
    scope: VariableScope<'_>,
    env: &EnvironmentRow,
    row: VariableRow,
    reveal: bool,
) -> ApiResult<Variable> {
    let value = state.open_variable(scope, &row)?;
    Ok(Variable {
        preview: vars::preview(&value, row.is_secret),
        value: reveal.then(|| value.to_string()),
        name: row.name,
        is_secret: row.is_secret,
        environment: env.name.clone(),
        environment_id: env.id.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A scope's variables, as views.
pub async fn variable_views(
    state: &AppState,
    scope: VariableScope<'_>,
    env: &EnvironmentRow,
    reveal: bool,
) -> ApiResult<Vec<Variable>> {
    state
        .store()?
        .variables(scope)
        .await?
        .into_iter()
        .map(|row| variable_view(state, scope, env, row, reveal))
        .collect()
}
