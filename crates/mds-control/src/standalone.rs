//! Standalone databases and buckets: made without a project (MIOSA
//! `POST /databases`, `POST /storage/buckets`), each with its own
//! credentials, states and logs. The tenant's hidden project holds them,
//! so the reconciler and the engines treat them as any other binding.
//! Attaching one to a project environment later moves it there; its
//! engine-side database, role or bucket stays as it is, so its data and
//! credentials do too.

use std::sync::Arc;

use mds_core::ids::IdKind;
use mds_core::kinds::ServiceKind;
use mds_core::tenancy::DEFAULT_WORKSPACE_ID;
use mds_store::{DataServiceRow, NewEnvironment, NewProject, ProjectRow, StoreError};
use serde_json::json;

use crate::attach::{attach, kinds_in, name_and_prefix, taken, KindOptions};
use crate::projects::resolve_environment;
use crate::{Caller, Control, ControlError, ControlResult};

/// Not a valid user slug (an underscore), so it never collides with one.
const HOLDER_SLUG: &str = "_standalone";
const HOLDER_ENVIRONMENT: &str = "standalone";

/// The tenant's holder of standalone services, made on first use.
async fn holder(control: &Control, caller: &Caller) -> ControlResult<Arc<ProjectRow>> {
    let store = control.store()?;
    if let Some(project) = store.standalone_project(&caller.tenant_id).await? {
        return Ok(project);
    }
    let project = NewProject {
        id: IdKind::Project.mint(),
        tenant_id: caller.tenant_id.clone(),
        workspace_id: DEFAULT_WORKSPACE_ID.to_string(),
        slug: HOLDER_SLUG.to_string(),
        name: "Standalone databases and buckets".to_string(),
        description: None,
        metadata: json!({}),
        attribution: json!({}),
        standalone: true,
        network_egress: "none".to_string(),
    };
    let environment = NewEnvironment {
        id: IdKind::Environment.mint(),
        name: HOLDER_ENVIRONMENT.to_string(),
        slug: HOLDER_ENVIRONMENT.to_string(),
        kind: "custom".to_string(),
        is_default: true,
        expires_at: None,
        data_copy: None,
    };
    match store.create_project(&project, &[environment]).await {
        Ok(row) => Ok(row),
        // Another request made it first.
        Err(StoreError::Conflict { .. }) => store
            .standalone_project(&caller.tenant_id)
            .await?
            .ok_or_else(|| ControlError::Internal("the standalone project vanished".into())),
        Err(e) => Err(e.into()),
    }
}

/// Makes a standalone database (Postgres or Redis) or bucket.
pub async fn create(
    control: &Control,
    caller: &Caller,
    kind: ServiceKind,
    name: Option<String>,
    options: &KindOptions,
) -> ControlResult<DataServiceRow> {
    let project = holder(control, caller).await?;
    attach(control, &project, kind, name, None, options).await
}

/// Attaches standalone `service` to `project`'s `environment` (its default
/// when `None`): from the next boot there, its variables are injected as
/// for any binding, under the standard names when the environment has no
/// service of its kind, else prefixed with its name.
pub async fn adopt(
    control: &Control,
    service: &DataServiceRow,
    project: &ProjectRow,
    environment: Option<&str>,
) -> ControlResult<DataServiceRow> {
    let store = control.store()?;
    if !service.standalone {
        if service.project_id == project.id {
            return Ok(service.clone());
        }
        return Err(ControlError::conflict(
            "DATABASE_ALREADY_ATTACHED",
            format!(
                "{:?} is already attached to another project; detach it there first",
                service.name
            ),
        ));
    }
    let kind: ServiceKind = service
        .kind
        .parse()
        .map_err(|e: mds_core::kinds::UnknownValue| ControlError::Internal(e.to_string()))?;
    let env = resolve_environment(store, project, environment).await?;
    let existing = store.data_services(&project.id).await?;
    let in_env = kinds_in(control, &existing, std::slice::from_ref(&env)).await?;
    let (name, prefix) = name_and_prefix(&existing, &in_env, kind, Some(service.name.clone()))?;
    let adopted = store
        .adopt_data_service(service, &project.id, &env.id, &name, &prefix)
        .await
        .map_err(|e| taken(e, kind, &name))?
        .ok_or_else(|| {
            ControlError::conflict(
                "DATABASE_ALREADY_ATTACHED",
                format!("{:?} was attached elsewhere meanwhile", service.name),
            )
        })?;
    tracing::info!(
        service = adopted.id,
        project = project.id,
        environment = env.name,
        prefix,
        "attached a standalone service"
    );
    control.reconciler()?.wake();
    Ok(adopted)
}
