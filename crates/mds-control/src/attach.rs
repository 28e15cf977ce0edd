//! Attaching and detaching data services: the one path every API takes
//! (the native `/projects/{p}/data-services`, MIOSA `/databases` and
//! `/services`, auth's enable, a deployment's database).
//!
//! Attaching writes the desired state (the service and a binding per
//! environment) in one transaction and wakes the reconciler; the bindings
//! turn `running` once a real login with their own credentials works.

use std::time::Duration;

use mds_core::ids::IdKind;
use mds_core::kinds::ServiceKind;
use mds_core::names;
use mds_store::{DataServiceRow, NewDataService, ProjectRow, StoreError};
use serde_json::json;

use crate::projects::resolve_environment;
use crate::{Caller, Control, ControlError, ControlResult};

const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Attaches a data service of `kind` to `project`: the one path every API
/// takes.
pub async fn attach(
    control: &Control,
    project: &ProjectRow,
    kind: ServiceKind,
    name: Option<String>,
    environment: Option<&str>,
    options: &KindOptions,
) -> ControlResult<DataServiceRow> {
    let config = kind_config(control, kind, options)?;
    let store = control.store()?;
    let reconciler = control.reconciler()?;
    if let Some(name) = &name {
        names::validate_service_name("name", name)?;
    }
    let scope = match environment {
        Some(reference) => Some(resolve_environment(store, project, Some(reference)).await?),
        None => None,
    };
    let existing = store.data_services(&project.id).await?;
    let (name, env_prefix) = name_and_prefix(&existing, kind, name)?;
    let environments: Vec<_> = match &scope {
        Some(env) => vec![env.clone()],
        None => project.environments.clone(),
    };
    let service_part = (!env_prefix.is_empty()).then_some(name.as_str());
    let bindings: Vec<_> = environments
        .iter()
        .map(|env| reconciler.new_binding(&project.slug, &env.id, &env.slug, service_part))
        .collect();
    let new = NewDataService {
        id: IdKind::DataService.mint(),
        project_id: project.id.clone(),
        kind: kind.as_str().to_string(),
        name: name.clone(),
        env_prefix,
        environment_id: scope.map(|e| e.id),
        config,
    };
    let row = store
        .create_data_service(&new, &bindings)
        .await
        .map_err(|e| taken(e, kind, &name))?;
    let binding_ids: Vec<&str> = bindings.iter().map(|b| b.id.as_str()).collect();
    tracing::info!(
        service = row.id,
        project = project.id,
        kind = %kind,
        bindings = ?binding_ids,
        "attached a data service"
    );
    reconciler.wake();
    Ok(row)
}

/// The service's name and the prefix of the names it injects: the first
/// of a kind injects the standard names, each further one needs a name
/// and injects prefixed ones. Auth is one per project.
fn name_and_prefix(
    existing: &[DataServiceRow],
    kind: ServiceKind,
    name: Option<String>,
) -> ControlResult<(String, String)> {
    let first_of_kind = !existing.iter().any(|s| s.kind == kind.as_str());
    if kind == ServiceKind::Auth && !first_of_kind {
        return Err(ControlError::conflict(
            "AUTH_ALREADY_ENABLED",
            "this project already has auth (one per project, with users per environment); \
             change its settings with PATCH /projects/{id}/auth",
        ));
    }
    match (name, first_of_kind) {
        (name, true) => Ok((name.unwrap_or_else(|| kind.to_string()), String::new())),
        (Some(name), false) => {
            let prefix = names::env_prefix(&name);
            Ok((name, prefix))
        }
        (None, false) => Err(ControlError::conflict(
            "DATA_SERVICE_NAME_REQUIRED",
            format!(
                "this project already has a {kind} service, which injects the standard \
                 names; give this one a name (for example \"analytics\") and it injects \
                 prefixed ones (ANALYTICS_...)"
            ),
        )
        .with_details(json!({ "field": "name" }))),
    }
}

/// A write of a new service that lost a race for a name, said as such.
fn taken(e: StoreError, kind: ServiceKind, name: &str) -> ControlError {
    let StoreError::Conflict { constraint } = e else {
        return e.into();
    };
    let (code, message) = match constraint.as_str() {
        "data_services_name_key" => (
            "DATA_SERVICE_NAME_TAKEN",
            format!("this project already has a data service named {name:?}"),
        ),
        "data_services_prefix_key" => (
            "DATA_SERVICE_NAME_TAKEN",
            format!("another {kind} service of this project injects the same names"),
        ),
        _ => (
            "CONFLICT",
            "the engine-side name is taken; retry".to_string(),
        ),
    };
    ControlError::conflict(code, message).with_details(json!({ "field": "name" }))
}

/// Waits until every binding settles: reaches its desired state, or keeps
/// failing (a first error is often a race that the retry clears).
pub async fn wait_settled(control: &Control, service_id: &str) -> ControlResult<()> {
    // Woken by the bindings' change notices; a wait that runs out answers
    // with the state as it is, which the client reads.
    control
        .reconciler()?
        .wait_settled(service_id, WAIT_LIMIT)
        .await?;
    Ok(())
}

/// The caller's service `id`, or not found.
pub async fn load_service(
    control: &Control,
    caller: &Caller,
    id: &str,
) -> ControlResult<DataServiceRow> {
    control
        .store()?
        .data_service(&caller.tenant_id, id)
        .await?
        .ok_or_else(|| ControlError::not_found("data service", id))
}

/// Settings some kinds take at attach.
#[derive(Default)]
pub struct KindOptions {
    pub maxmemory: Option<String>,
    pub eviction: Option<String>,
    /// Auth settings (`allow_signups`, `token_expiry_sec`, ...).
    pub auth: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A service's engine settings, validated (each bad one names its field).
fn kind_config(
    control: &Control,
    kind: ServiceKind,
    options: &KindOptions,
) -> ControlResult<serde_json::Value> {
    if kind != ServiceKind::Redis {
        for (field, given) in [
            ("maxmemory", &options.maxmemory),
            ("eviction", &options.eviction),
        ] {
            if given.is_some() {
                return Err(ControlError::invalid(
                    field,
                    format!("applies to redis, not {kind}"),
                ));
            }
        }
    }
    match kind {
        ServiceKind::Redis => {
            let maxmemory = match &options.maxmemory {
                None => mds_provision::DEFAULT_REDIS_MEMORY,
                Some(text) => mds_engines::parse_memory(text).ok_or_else(|| {
                    ControlError::invalid(
                        "maxmemory",
                        format!("{text:?} is not a size of at least 1mb (like 256mb or 1gb)"),
                    )
                })?,
            };
            let eviction = options.eviction.as_deref().unwrap_or("noeviction");
            if !mds_engines::EVICTION_POLICIES.contains(&eviction) {
                return Err(ControlError::invalid(
                    "eviction",
                    format!(
                        "{eviction:?} is not an eviction policy; use one of {}",
                        mds_engines::EVICTION_POLICIES.join(", ")
                    ),
                ));
            }
            Ok(json!({ "maxmemory_bytes": maxmemory, "eviction": eviction, "engine_version": "7" }))
        }
        ServiceKind::Storage | ServiceKind::Volume => Ok(json!({})),
        ServiceKind::Auth => {
            let mut config = mds_auth::AuthConfig::default();
            if let Some(patch) = &options.auth {
                config
                    .apply(patch)
                    .map_err(|e| ControlError::invalid(e.field, e.message))?;
            }
            Ok(config.to_stored())
        }
        ServiceKind::Postgres => Ok(json!({ "engine_version": control.engine_version() })),
    }
}

/// The kind a client named (`postgres`, `pg`, `s3`...), or which kinds
/// there are.
pub fn kind_of(raw: &str) -> ControlResult<ServiceKind> {
    let available = || {
        ServiceKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lowered = raw.to_ascii_lowercase();
    ServiceKind::from_alias(&lowered).ok_or_else(|| match lowered.as_str() {
        "mysql" | "mongodb" => ControlError::invalid(
            "type",
            format!("{raw:?} cannot be attached yet; available: {}", available()),
        ),
        _ => ControlError::invalid(
            "type",
            format!(
                "unknown data-service type {raw:?}; available: {}",
                available()
            ),
        ),
    })
}

/// Asks for a data service's data to be deleted (the caller confirmed).
pub async fn remove_service(control: &Control, service: &DataServiceRow) -> ControlResult<()> {
    control
        .store()?
        .set_service_desired(&service.id, "deleted")
        .await?;
    tracing::info!(service = service.id, "deleting a data service, as asked");
    control.reconciler()?.wake();
    Ok(())
}
