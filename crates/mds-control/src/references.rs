//! A data service's variables and their references
//! (`${{Postgres.DATABASE_URL}}`, `${{shared.NAME}}`, `${{NAME}}`,
//! `${{secret(32)}}`): what a service exposes to other services'
//! references and to its own boots.

use std::collections::BTreeMap;

use mds_core::env::{expand_references, BadReference, Reference};
use mds_store::{DataServiceRow, EnvironmentRow, ProjectRow, VariableScope};

use crate::{is_running, Control, ControlError, ControlResult};

/// How deep references may chain (`A -> B -> C`).
const REFERENCE_DEPTH: u8 = 3;

/// A variable a data service exposes to references and boots.
#[derive(Clone)]
pub struct Exposed {
    pub name: String,
    pub value: String,
    pub secret: bool,
    /// "Postgres (binding)" or "Postgres (variable)".
    pub origin: String,
}

/// What a data service exposes in an environment: its binding's variables
/// (unprefixed: `${{Postgres.DATABASE_URL}}`), then its own variables.
async fn exposed(
    control: &Control,
    project: &ProjectRow,
    service: &DataServiceRow,
    env: &EnvironmentRow,
    depth: u8,
) -> ControlResult<Vec<Exposed>> {
    let store = control.store()?;
    let mut out = Vec::new();
    if let Some(binding) = store
        .bindings(&service.id)
        .await?
        .into_iter()
        .find(|b| b.environment_id == env.id && is_running(b))
    {
        let unprefixed = DataServiceRow {
            env_prefix: String::new(),
            ..service.clone()
        };
        for (name, value, secret) in control
            .reconciler()?
            .binding_variables(&unprefixed, &binding)
            .map_err(ControlError::internal)?
        {
            out.push(Exposed {
                name,
                value,
                secret,
                origin: format!("{} (binding)", service.name),
            });
        }
    }
    let scope = VariableScope::Service {
        service_id: &service.id,
        environment_id: &env.id,
    };
    let own: Vec<(String, String, bool)> = control
        .open_variables(scope)
        .await?
        .into_iter()
        .map(|(row, value)| (row.name, value.to_string(), row.is_secret))
        .collect();
    for (name, raw, secret) in &own {
        let value = if depth == 0 {
            raw.clone()
        } else {
            expand(control, project, env, raw, &own, depth - 1).await?
        };
        out.push(Exposed {
            name: name.clone(),
            value,
            secret: *secret,
            origin: format!("{} (variable)", service.name),
        });
    }
    Ok(out)
}

/// Resolves the references in `raw`; unknown targets resolve to "".
async fn expand(
    control: &Control,
    project: &ProjectRow,
    env: &EnvironmentRow,
    raw: &str,
    own: &[(String, String, bool)],
    depth: u8,
) -> ControlResult<String> {
    if !raw.contains("${{") {
        return Ok(raw.to_string());
    }
    // Gather what the references need first (lookups are async), then
    // substitute with the pure expander.
    let mut wanted_services = Vec::new();
    let _ = expand_references(raw, |r| {
        if let Reference::Service(name, _) = r {
            wanted_services.push(name.to_string());
        }
        Ok(String::new())
    });
    let store = control.store()?;
    let services = store.data_services(&project.id).await?;
    let mut exposed_by: Vec<(String, Vec<Exposed>)> = Vec::new();
    for wanted in wanted_services {
        if let Some(target) = services
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(&wanted) || s.id == wanted)
        {
            let vars = Box::pin(exposed(control, project, target, env, depth)).await?;
            exposed_by.push((wanted, vars));
        }
    }
    let shared_scope = VariableScope::Shared {
        environment_id: &env.id,
    };
    let shared: Vec<(String, String)> = control
        .open_variables(shared_scope)
        .await?
        .into_iter()
        .map(|(row, value)| (row.name, value.to_string()))
        .collect();
    expand_references(raw, |r| {
        Ok(match r {
            Reference::Shared(name) => shared
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            Reference::Service(service, name) => exposed_by
                .iter()
                .find(|(s, _)| s == service)
                .and_then(|(_, vars)| vars.iter().find(|v| v.name == *name))
                .map(|v| v.value.clone())
                .unwrap_or_default(),
            Reference::Own(name) => own
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, v, _)| v.clone())
                .unwrap_or_default(),
            Reference::Secret(_) => String::new(),
        })
    })
    .map_err(|e| ControlError::invalid("variables", e.to_string()))
}

/// Draws each `${{secret(N)}}` now (it is stored as drawn) and checks the
/// shape of every other reference, which stays for boot time.
pub fn draw_secrets(value: &str) -> Result<String, BadReference> {
    expand_references(value, |r| {
        Ok(match r {
            Reference::Secret(n) => mds_crypto::random_password(*n).to_string(),
            Reference::Shared(name) => format!("${{{{shared.{name}}}}}"),
            Reference::Service(service, name) => format!("${{{{{service}.{name}}}}}"),
            Reference::Own(name) => format!("${{{{{name}}}}}"),
        })
    })
}

/// [`exposed`] by name, later entries (own variables) winning over earlier
/// ones (the binding's).
pub async fn resolved_exposed(
    control: &Control,
    project: &ProjectRow,
    service: &DataServiceRow,
    env: &EnvironmentRow,
) -> ControlResult<Vec<Exposed>> {
    let mut merged: BTreeMap<String, Exposed> = BTreeMap::new();
    for var in exposed(control, project, service, env, REFERENCE_DEPTH).await? {
        merged.insert(var.name.clone(), var);
    }
    Ok(merged.into_values().collect())
}

/// The own variables of `service` in `env`, references resolved, as the
/// service layer of a boot.
pub async fn service_layer(
    control: &Control,
    project: &ProjectRow,
    service: &DataServiceRow,
    env: &EnvironmentRow,
) -> ControlResult<Vec<(String, String, bool)>> {
    let scope = VariableScope::Service {
        service_id: &service.id,
        environment_id: &env.id,
    };
    let own_names: Vec<String> = control
        .store()?
        .variables(scope)
        .await?
        .into_iter()
        .map(|r| r.name)
        .collect();
    Ok(resolved_exposed(control, project, service, env)
        .await?
        .into_iter()
        .filter(|v| own_names.contains(&v.name))
        .map(|v| (v.name, v.value, v.secret))
        .collect())
}

/// Variables that are not a data service's own (a deployment's, which a
/// web or worker service's are), references resolved in `env` as a data
/// service's are: `${{Postgres.DATABASE_URL}}` is that environment's.
pub async fn resolve_all(
    control: &Control,
    project: &ProjectRow,
    env: &EnvironmentRow,
    own: Vec<(String, String, bool)>,
) -> ControlResult<Vec<(String, String, bool)>> {
    let mut out = Vec::with_capacity(own.len());
    for (name, raw, secret) in &own {
        // A value that is not a well-formed reference (one written through
        // the deployments API, say) is kept as written: it never blocks a
        // boot.
        let value = match expand(control, project, env, raw, &own, REFERENCE_DEPTH).await {
            Ok(value) => value,
            Err(ControlError::Invalid { .. }) => raw.clone(),
            Err(e) => return Err(e),
        };
        out.push((name.clone(), value, *secret));
    }
    Ok(out)
}
