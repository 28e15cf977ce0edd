//! A caller's projects and their environments, named by id, name or slug.

use std::sync::Arc;

use mds_core::ids::IdKind;
use mds_core::names;
use mds_core::tenancy::{PRODUCTION, STAGING};
use mds_store::{
    DataServiceRow, EnvironmentRow, NewEnvironment, NewProject, ProjectRow, Store, StoreError,
};

use crate::{Caller, ControlError, ControlResult};

/// The caller's project named by `reference` (id or slug), or not found.
/// The hidden holder of standalone services is no project of theirs.
pub async fn load_project(
    store: &Store,
    caller: &Caller,
    reference: &str,
) -> ControlResult<Arc<ProjectRow>> {
    store
        .project(&caller.tenant_id, reference)
        .await?
        .filter(|p| !p.standalone)
        .ok_or_else(|| ControlError::not_found("project", reference))
}

/// The project a service of the caller's lives in, the standalone holder
/// included.
pub async fn service_project(
    store: &Store,
    caller: &Caller,
    service: &DataServiceRow,
) -> ControlResult<Arc<ProjectRow>> {
    store
        .project(&caller.tenant_id, &service.project_id)
        .await?
        .ok_or_else(|| ControlError::not_found("project", &service.project_id))
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

/// A slug someone else's project (of this tenant) holds.
pub fn slug_taken(slug: &str) -> ControlError {
    ControlError::conflict(
        "PROJECT_SLUG_TAKEN",
        format!("a project with slug {slug:?} already exists; choose another slug"),
    )
    .with_details(serde_json::json!({ "field": "slug" }))
}

/// Creates `project` with its `production` (the default) and `staging`
/// environments, in one transaction. A slug the client chose must be
/// free; one derived from the name gets a numeric suffix instead.
pub async fn create_project(
    store: &Store,
    mut project: NewProject,
    explicit_slug: bool,
) -> ControlResult<Arc<ProjectRow>> {
    let environments: Vec<NewEnvironment> = [PRODUCTION, STAGING]
        .iter()
        .map(|env| NewEnvironment {
            id: IdKind::Environment.mint(),
            name: env.to_string(),
            slug: env.to_string(),
            kind: names::environment_kind(env).to_string(),
            is_default: *env == PRODUCTION,
        })
        .collect();
    let base_slug = project.slug.clone();
    for attempt in 2..=50u32 {
        match store.create_project(&project, &environments).await {
            Ok(row) => return Ok(row),
            Err(StoreError::Conflict { constraint }) if constraint == "projects_slug_key" => {
                if explicit_slug {
                    return Err(slug_taken(&project.slug));
                }
                let suffix = format!("-{attempt}");
                let mut slug = base_slug.clone();
                slug.truncate(names::MAX_SLUG - suffix.len());
                project.slug = format!("{}{suffix}", slug.trim_end_matches('-'));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(slug_taken(&base_slug))
}
