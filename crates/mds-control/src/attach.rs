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
///
/// With an `environment`, a name the project already has for a service of
/// this kind bound elsewhere binds that service in this environment too: the
/// SDK's "service of the same name in another environment". In the
/// tenant's standalone project, the service is a standalone database or
/// bucket.
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
    if let (Some(env), Some(name)) = (&scope, &name) {
        if let Some(same) = existing.iter().find(|s| s.name.eq_ignore_ascii_case(name)) {
            return bind_in_environment(control, project, same, kind, env, options).await;
        }
    }
    let environments: Vec<_> = match &scope {
        Some(env) => vec![env.clone()],
        None => project.environments.clone(),
    };
    let id = IdKind::DataService.mint();
    let (name, env_prefix) = if project.standalone {
        // Standalone services inject nothing until attached (which sets
        // the prefix they have there); a prefix of their own keeps them
        // apart meanwhile.
        let name = name.unwrap_or_else(|| format!("{kind}-{}", short_id(&id)));
        (name, names::env_prefix(&id))
    } else {
        let in_targets = kinds_in(control, &existing, &environments).await?;
        name_and_prefix(&existing, &in_targets, kind, name)?
    };
    // The engine-side names: a further service of a kind, and every
    // standalone one, get a part of their own.
    let service_part = if project.standalone {
        Some(id.as_str())
    } else {
        (!env_prefix.is_empty()).then_some(name.as_str())
    };
    let bindings: Vec<_> = environments
        .iter()
        .map(|env| reconciler.new_binding(&project.slug, &env.id, &env.slug, service_part))
        .collect();
    let new = NewDataService {
        id: id.clone(),
        project_id: project.id.clone(),
        kind: kind.as_str().to_string(),
        name: name.clone(),
        env_prefix,
        environment_id: scope.map(|e| e.id),
        config,
        standalone: project.standalone,
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

/// The last characters of an id: its random part, short enough for a name.
fn short_id(id: &str) -> String {
    let tail = id.len().saturating_sub(8);
    id[tail..].to_ascii_lowercase()
}

/// The kinds of service already bound in any of `environments`.
/// (A service bound everywhere counts in an environment whose binding is
/// not made yet.)
pub(crate) async fn kinds_in(
    control: &Control,
    existing: &[DataServiceRow],
    environments: &[mds_store::EnvironmentRow],
) -> ControlResult<Vec<String>> {
    let mut kinds: Vec<String> = existing
        .iter()
        .filter(|s| s.environment_id.is_none() && !s.deleting)
        .map(|s| s.kind.clone())
        .collect();
    for env in environments {
        for (service, _) in control.store()?.environment_bindings(&env.id).await? {
            kinds.push(service.kind);
        }
    }
    Ok(kinds)
}

/// Binds `service` in `env` as well (the SDK's service of one name in
/// several environments), with the same injected names.
async fn bind_in_environment(
    control: &Control,
    project: &ProjectRow,
    service: &DataServiceRow,
    kind: ServiceKind,
    env: &mds_store::EnvironmentRow,
    options: &KindOptions,
) -> ControlResult<DataServiceRow> {
    let taken_here = || {
        ControlError::conflict(
            "DATA_SERVICE_NAME_TAKEN",
            format!(
                "environment {:?} already has a service named {:?}",
                env.name, service.name
            ),
        )
        .with_details(json!({ "field": "name" }))
    };
    if service.kind != kind.as_str() {
        return Err(ControlError::conflict(
            "DATA_SERVICE_NAME_TAKEN",
            format!(
                "{:?} is a {} service in this project; a name has one kind in every \
                 environment, so choose another name",
                service.name, service.kind
            ),
        )
        .with_details(json!({ "field": "name" })));
    }
    if service.deleting || service.environment_id.is_none() {
        // Being deleted, or bound everywhere already.
        return Err(taken_here());
    }
    // A bucket of a chosen name is one bucket: it cannot be in two places.
    if service.config.get("bucket").is_some() || options.bucket.is_some() {
        return Err(taken_here());
    }
    // The settings are the service's, shared by its members: a member
    // cannot bring others.
    let settings = [
        ("maxmemory", options.maxmemory.is_some()),
        ("eviction", options.eviction.is_some()),
        (
            "engine_version",
            options.engine_version.as_deref().is_some_and(|v| {
                service.config["engine_version"].as_str() != Some(v.trim_start_matches(['v', 'V']))
            }),
        ),
        ("settings", options.auth.is_some()),
    ];
    if let Some((field, _)) = settings.iter().find(|(_, given)| *given) {
        return Err(ControlError::invalid(
            *field,
            format!(
                "{:?} exists in another environment and this binds it here too, with its own \
                 settings; leave {field} out",
                service.name
            ),
        ));
    }
    // Pooling is per binding: this one may have its own (checked before
    // anything is written).
    let pool = options.pool.check(control, kind)?;
    let reconciler = control.reconciler()?;
    let service_part = (!service.env_prefix.is_empty()).then_some(service.name.as_str());
    let binding = reconciler.new_binding(&project.slug, &env.id, &env.slug, service_part);
    let added = control
        .store()?
        .add_environment_binding(service, &binding)
        .await
        .map_err(|e| taken(e, kind, &service.name))?;
    if !added {
        return Err(taken_here());
    }
    crate::pools::apply(control, service, Some(env), &pool).await?;
    tracing::info!(
        service = service.id,
        binding = binding.id,
        environment = env.name,
        "bound a service in one more environment"
    );
    reconciler.wake();
    Ok(service.clone())
}

/// The service's name and the prefix of the names it injects: the first
/// of a kind in its environments injects the standard names, each further
/// one needs a name and injects prefixed ones. Auth is one per project.
pub(crate) fn name_and_prefix(
    existing: &[DataServiceRow],
    kinds_in_targets: &[String],
    kind: ServiceKind,
    name: Option<String>,
) -> ControlResult<(String, String)> {
    if kind == ServiceKind::Auth && existing.iter().any(|s| s.kind == kind.as_str()) {
        return Err(ControlError::conflict(
            "AUTH_ALREADY_ENABLED",
            "this project already has auth (one per project, with users per environment); \
             change its settings with PATCH /projects/{id}/auth",
        ));
    }
    let first_of_kind = !kinds_in_targets.iter().any(|k| k == kind.as_str());
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
pub(crate) fn taken(e: StoreError, kind: ServiceKind, name: &str) -> ControlError {
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
    /// The engine's major version the client asked for (`"15"`, `"7"`).
    pub engine_version: Option<String>,
    /// Storage: the bucket's name, when the client chose it.
    pub bucket: Option<String>,
    /// Postgres: how its bindings are pooled.
    pub pool: crate::pools::PoolRequest,
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
    if kind != ServiceKind::Storage && options.bucket.is_some() {
        return Err(ControlError::invalid(
            "bucket",
            format!("applies to storage, not {kind}"),
        ));
    }
    let engine_version = engine_version(control, kind, options.engine_version.as_deref())?;
    let pool = options.pool.check(control, kind)?;
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
            Ok(
                json!({ "maxmemory_bytes": maxmemory, "eviction": eviction, "engine_version": engine_version }),
            )
        }
        ServiceKind::Storage => Ok(match &options.bucket {
            Some(bucket) => json!({ "bucket": bucket }),
            None => json!({}),
        }),
        ServiceKind::Volume => Ok(json!({})),
        ServiceKind::Auth => {
            let mut config = mds_auth::AuthConfig::default();
            if let Some(patch) = &options.auth {
                config
                    .apply(patch)
                    .map_err(|e| ControlError::invalid(e.field, e.message))?;
            }
            Ok(config.to_stored())
        }
        ServiceKind::Postgres => {
            // The pooling its bindings start with, here and in environments
            // made later.
            let mut config = json!({ "engine_version": engine_version });
            if let Some(mode) = pool.mode {
                config["pool_mode"] = json!(mode);
            }
            if let Some(size) = pool.size {
                config["pool_size"] = json!(size);
            }
            if let Some(max_clients) = pool.max_clients {
                config["pool_max_clients"] = json!(max_clients);
            }
            Ok(config)
        }
    }
}

/// The major version a new service of `kind` runs: the one asked for when
/// this server runs it, else a refusal naming the versions it has. Nothing
/// is silently changed.
fn engine_version(
    control: &Control,
    kind: ServiceKind,
    asked: Option<&str>,
) -> ControlResult<Option<String>> {
    let running = match kind {
        ServiceKind::Postgres => Some(control.engine_version()),
        ServiceKind::Redis => control.redis_version(),
        _ => {
            return match asked {
                Some(_) => Err(ControlError::invalid(
                    "engine_version",
                    format!("{kind} has no engine version to choose"),
                )),
                None => Ok(None),
            }
        }
    };
    let Some(asked) = asked.map(str::trim) else {
        return Ok(running);
    };
    // "16", "16.2" and "v16" all ask for major 16.
    let major = asked
        .trim_start_matches(['v', 'V'])
        .split('.')
        .next()
        .unwrap_or_default();
    match running {
        Some(running) if running == major => Ok(Some(running)),
        Some(running) => Err(ControlError::invalid(
            "engine_version",
            format!(
                "{kind} {asked:?} is not available on this server; it runs {kind} {running} \
                 (available: [\"{running}\"])"
            ),
        )),
        None => Err(ControlError::invalid(
            "engine_version",
            format!(
                "this server's {kind} is external and its version is not known; \
                 leave engine_version out"
            ),
        )),
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

/// Starts or stops every binding of `service` and waits for them to
/// settle. Data and credentials stay either way.
pub async fn set_desired(
    control: &Control,
    service: &DataServiceRow,
    desired: mds_core::kinds::Desired,
) -> ControlResult<()> {
    if service.deleting {
        return Err(being_deleted());
    }
    control
        .store()?
        .set_service_desired(&service.id, desired.as_str())
        .await?;
    control.reconciler()?.wake();
    wait_settled(control, &service.id).await
}

/// Sets what one binding (a service's member in one environment) should
/// be, and wakes the reconciler; deleting it deletes that environment's
/// data only.
pub async fn set_member_desired(
    control: &Control,
    service: &DataServiceRow,
    binding_id: &str,
    desired: mds_core::kinds::Desired,
) -> ControlResult<()> {
    let store = control.store()?;
    if desired == mds_core::kinds::Desired::Deleted {
        control
            .backup_service_before_delete(service, Some(binding_id))
            .await?;
    }
    let changed = match desired {
        mds_core::kinds::Desired::Deleted => store.remove_member(&service.id, binding_id).await?,
        _ => {
            store
                .set_binding_desired(binding_id, desired.as_str())
                .await?
        }
    };
    if !changed {
        return Err(being_deleted());
    }
    control.reconciler()?.wake();
    Ok(())
}

fn being_deleted() -> ControlError {
    ControlError::conflict("RESOURCE_STATE", "this database is being deleted")
}

/// Ends every session of the service's roles, in every environment or in
/// one member's (`only`); data and credentials stay.
pub async fn restart(
    control: &Control,
    service: &DataServiceRow,
    only: Option<&str>,
) -> ControlResult<()> {
    let store = control.store()?;
    let reconciler = control.reconciler()?;
    let bindings = store.bindings(&service.id).await?;
    for binding in bindings.iter().filter(|b| only.is_none_or(|id| b.id == id)) {
        reconciler.restart(service, binding).await?;
        let _ = store
            .add_binding_event(&binding.id, "lifecycle", "restarted: sessions closed")
            .await;
    }
    Ok(())
}

/// Asks for a data service's data to be deleted (the caller confirmed).
pub async fn remove_service(control: &Control, service: &DataServiceRow) -> ControlResult<()> {
    control.backup_service_before_delete(service, None).await?;
    control
        .store()?
        .set_service_desired(&service.id, "deleted")
        .await?;
    tracing::info!(service = service.id, "deleting a data service, as asked");
    control.reconciler()?.wake();
    Ok(())
}
