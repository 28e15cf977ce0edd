//! A caller's projects and their environments, named by id, name or slug.

use std::sync::Arc;

use mds_store::{EnvironmentRow, ProjectRow, Store};

use crate::{Caller, ControlError, ControlResult};

/// The caller's project named by `reference` (id or slug), or not found.
pub async fn load_project(
    store: &Store,
    caller: &Caller,
    reference: &str,
) -> ControlResult<Arc<ProjectRow>> {
    store
        .project(&caller.tenant_id, reference)
        .await?
        .ok_or_else(|| ControlError::not_found("project", reference))
}

/// The id of the caller's project named by an optional reference (a
/// filter or an owner); not found if it names none.
pub async fn project_id_of(
    store: &Store,
    caller: &Caller,
    reference: Option<&str>,
) -> ControlResult<Option<String>> {
    match reference {
        Some(reference) => Ok(Some(
            load_project(store, caller, reference).await?.id.clone(),
        )),
        None => Ok(None),
    }
}

/// The environment `reference` (id, name or slug) of `project`; the default
/// environment when `reference` is `None`.
pub async fn resolve_environment(
    store: &Store,
    project: &ProjectRow,
    reference: Option<&str>,
) -> ControlResult<EnvironmentRow> {
    match reference.filter(|r| !r.is_empty()) {
        Some(reference) => store
            .environment(&project.id, reference)
            .await?
            .ok_or_else(|| ControlError::environment_not_found(reference, &project.slug)),
        None => store
            .default_environment(&project.id)
            .await?
            .ok_or_else(|| ControlError::environment_not_found("(default)", &project.slug)),
    }
}

/// The caller's project and one of its environments.
pub async fn load_environment(
    store: &Store,
    caller: &Caller,
    project: &str,
    environment: Option<&str>,
) -> ControlResult<(Arc<ProjectRow>, EnvironmentRow)> {
    let project = load_project(store, caller, project).await?;
    let env = resolve_environment(store, &project, environment).await?;
    Ok((project, env))
}
