//! A caller's projects and their environments, named by id, name or slug;
//! creating, duplicating and syncing environments; what a project holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use mds_api_types::projects::{EnvironmentSync, SyncChange, SyncSkipped};
use mds_api_types::CreateEnvironment;
use mds_core::ids::IdKind;
use mds_core::names;
use mds_core::tenancy::{PRODUCTION, STAGING};
use mds_store::{
    BindingRow, BucketRow, DataServiceRow, DeploymentRow, EnvironmentRow, InstanceRow,
    NewEnvironment, NewProject, ProjectRow, SandboxRow, Store, StoreError, VariableScope,
    VolumeRow,
};
use zeroize::Zeroizing;

use crate::variables::{may_steer_programs, Entry};
use crate::{Caller, Control, ControlError, ControlResult};

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
            expires_at: None,
            data_copy: None,
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

/// A new environment of `project`: its name checked, its slug and kind
/// derived unless given. Its data-service bindings are added by the
/// reconciler's next pass, which this wakes.
/// Makes an environment of `project`; with a `source_environment`, its
/// data services are then filled from that one's restore point
/// ([`crate::previews::data`]), and it is `copying` until done.
pub async fn create_environment(
    control: &Control,
    project: &ProjectRow,
    body: CreateEnvironment,
) -> ControlResult<EnvironmentRow> {
    let CreateEnvironment {
        name, slug, kind, ..
    } = &body;
    let (name, slug, kind) = (name.clone(), slug.clone(), kind.clone());
    let name = name.ok_or_else(|| ControlError::missing("name"))?;
    names::validate_environment_name("name", &name)?;
    let slug = match slug {
        Some(slug) => {
            names::validate_slug("slug", &slug)?;
            slug
        }
        None => names::environment_slug(&name),
    };
    let kind = match kind {
        Some(kind) if names::ENVIRONMENT_KINDS.contains(&kind.as_str()) => kind,
        Some(kind) => {
            return Err(ControlError::invalid(
                "kind",
                format!(
                    "must be one of {:?}, got {kind:?}",
                    names::ENVIRONMENT_KINDS
                ),
            ))
        }
        None => names::environment_kind(&name).to_string(),
    };
    let expires_at = body
        .ttl
        .as_deref()
        .map(|raw| crate::previews::check_ttl(&kind, raw))
        .transpose()?
        .map(crate::previews::expiry_after);
    let new = NewEnvironment {
        id: IdKind::Environment.mint(),
        name: name.clone(),
        slug,
        kind,
        is_default: false,
        expires_at,
        data_copy: crate::previews::data::plan(control, project, &body).await?,
    };
    match control.store()?.create_environment(&project.id, &new).await {
        Ok(row) => {
            if let Ok(reconciler) = control.reconciler() {
                reconciler.wake();
            }
            if row.data_state.is_some() {
                if let Err(e) = crate::previews::data::start_copies(control, Some(&row.id)).await {
                    // Left `copying` unclaimed: the next sweep starts it.
                    tracing::warn!(environment = row.id, error = %e, "could not start a copy now");
                }
            }
            Ok(row)
        }
        Err(StoreError::Conflict { .. }) => Err(environment_name_taken(&name)),
        Err(e) => Err(e.into()),
    }
}

pub fn environment_name_taken(name: &str) -> ControlError {
    ControlError::conflict(
        "ENVIRONMENT_NAME_TAKEN",
        format!("this project already has an environment named {name:?}"),
    )
    .with_details(serde_json::json!({ "field": "name" }))
}

/// One set of variables an environment has: its shared ones, or a
/// project-wide data service's or a deployment's in it.
enum SetOwner {
    Shared,
    Service { id: String, name: String },
    Deployment { id: String, name: String },
}

impl SetOwner {
    fn scope<'a>(&'a self, environment_id: &'a str) -> VariableScope<'a> {
        match self {
            SetOwner::Shared => VariableScope::Shared { environment_id },
            SetOwner::Service { id, .. } => VariableScope::Service {
                service_id: id,
                environment_id,
            },
            SetOwner::Deployment { id, .. } => VariableScope::Deployment {
                deployment_id: id,
                environment_id,
            },
        }
    }

    fn label(&self) -> (&'static str, Option<String>) {
        match self {
            SetOwner::Shared => ("shared", None),
            SetOwner::Service { name, .. } => ("service", Some(name.clone())),
            SetOwner::Deployment { name, .. } => ("deployment", Some(name.clone())),
        }
    }
}

/// What a sync of one environment from another writes.
struct SyncPlan {
    changes: Vec<SyncChange>,
    writes: Vec<(SetOwner, Vec<Entry>)>,
    unchanged: u64,
    skipped: Vec<SyncSkipped>,
}

/// What a project holds, for its summary.
pub struct ProjectInventory {
    pub project: Arc<ProjectRow>,
    pub services: Vec<(DataServiceRow, Vec<BindingRow>)>,
    pub sandboxes: Vec<SandboxRow>,
    pub deployments: Vec<(DeploymentRow, Vec<InstanceRow>)>,
    pub volumes: Vec<VolumeRow>,
    pub buckets: Vec<BucketRow>,
}

impl Control {
    /// Everything the caller's project `reference` holds.
    pub async fn project_inventory(
        &self,
        caller: &Caller,
        reference: &str,
    ) -> ControlResult<ProjectInventory> {
        let store = self.store()?;
        let project = load_project(store, caller, reference).await?;
        let mut services = Vec::new();
        for service in store.data_services(&project.id).await? {
            let bindings = store.bindings(&service.id).await?;
            services.push((service, bindings));
        }
        let mut deployments = Vec::new();
        for deployment in store
            .deployments(&caller.tenant_id, Some(&project.id))
            .await?
        {
            let instances = store.instances(&deployment.id).await?;
            deployments.push((deployment, instances));
        }
        Ok(ProjectInventory {
            sandboxes: store
                .sandboxes(&caller.tenant_id, None, &[], Some(&project.id))
                .await?,
            volumes: store
                .volumes(Some(&caller.tenant_id), Some(&project.id))
                .await?,
            buckets: store.buckets(Some(&project.id)).await?,
            services,
            deployments,
            project,
        })
    }

    /// What `from`'s variables would change in `target` (`None`: a new,
    /// empty environment), set by set.
    async fn sync_plan(
        &self,
        caller: &Caller,
        project: &ProjectRow,
        from: &EnvironmentRow,
        target: Option<&EnvironmentRow>,
    ) -> ControlResult<SyncPlan> {
        let store = self.store()?;
        let mut owners = vec![SetOwner::Shared];
        let mut skipped = Vec::new();
        for service in store.data_services(&project.id).await? {
            match &service.environment_id {
                None => owners.push(SetOwner::Service {
                    id: service.id,
                    name: service.name,
                }),
                Some(env) if *env == from.id => skipped.push(SyncSkipped {
                    kind: "data_service".to_string(),
                    reason: format!(
                        "attached to {:?} only: attach it to the other environment to have it there",
                        from.name
                    ),
                    name: service.name,
                }),
                Some(_) => {}
            }
        }
        for deployment in store
            .deployments(&caller.tenant_id, Some(&project.id))
            .await?
        {
            owners.push(SetOwner::Deployment {
                id: deployment.id,
                name: deployment.name,
            });
        }
        let mut plan = SyncPlan {
            changes: Vec::new(),
            writes: Vec::new(),
            unchanged: 0,
            skipped,
        };
        for owner in owners {
            let theirs = self.open_variables(owner.scope(&from.id)).await?;
            if theirs.is_empty() {
                continue;
            }
            let ours: BTreeMap<String, (Zeroizing<String>, bool)> = match target {
                Some(target) => self
                    .open_variables(owner.scope(&target.id))
                    .await?
                    .into_iter()
                    .map(|(row, value)| (row.name, (value, row.is_secret)))
                    .collect(),
                None => BTreeMap::new(),
            };
            let mut entries = Vec::new();
            for (row, value) in theirs {
                let action = match ours.get(&row.name) {
                    None => "add",
                    Some((v, secret)) if **v != *value || *secret != row.is_secret => "update",
                    Some(_) => {
                        plan.unchanged += 1;
                        continue;
                    }
                };
                let (set, owner_name) = owner.label();
                plan.changes.push(SyncChange {
                    set: set.to_string(),
                    owner: owner_name,
                    name: row.name.clone(),
                    action: action.to_string(),
                    is_secret: row.is_secret,
                });
                entries.push(Entry {
                    name: row.name,
                    value: value.to_string(),
                    secret: Some(row.is_secret),
                });
            }
            if !entries.is_empty() {
                plan.writes.push((owner, entries));
            }
        }
        // Checked for every set before anything is written, so a refusal
        // writes nothing.
        may_steer_programs(
            caller,
            plan.writes
                .iter()
                .flat_map(|(_, e)| e.iter().map(|e| e.name.as_str())),
        )?;
        Ok(plan)
    }

    async fn write_plan(
        &self,
        caller: &Caller,
        target: &EnvironmentRow,
        writes: Vec<(SetOwner, Vec<Entry>)>,
    ) -> ControlResult<()> {
        for (owner, entries) in writes {
            self.write_variables(caller, owner.scope(&target.id), entries)
                .await?;
        }
        Ok(())
    }

    /// Diffs `target` against `from` (both of `project`), set by set, and
    /// with `apply` writes what is missing or different. Nothing is ever
    /// removed. Data services attached to `from` only are not carried over
    /// (they are listed as skipped); project-wide ones are in every
    /// environment already.
    pub async fn sync_environment(
        &self,
        caller: &Caller,
        project: &ProjectRow,
        target: &EnvironmentRow,
        from: &EnvironmentRow,
        apply: bool,
    ) -> ControlResult<EnvironmentSync> {
        if target.id == from.id {
            return Err(ControlError::invalid(
                "from_environment_id",
                "must name another environment than the one synced",
            ));
        }
        let plan = self.sync_plan(caller, project, from, Some(target)).await?;
        if apply {
            self.write_plan(caller, target, plan.writes).await?;
        }
        Ok(EnvironmentSync {
            environment_id: target.id.clone(),
            environment: target.name.clone(),
            from_environment_id: from.id.clone(),
            from_environment: from.name.clone(),
            applied: apply,
            changes: plan.changes,
            unchanged: plan.unchanged,
            skipped: plan.skipped,
        })
    }

    /// A new environment named `name` with `source`'s configuration: its
    /// shared, service and deployment variables, and (by the reconciler)
    /// new, empty bindings of the project-wide data services with their
    /// own credentials. No data is copied. Everything is read and checked
    /// before the environment is made; if writing fails, it is removed.
    pub async fn duplicate_environment(
        &self,
        caller: &Caller,
        project: &ProjectRow,
        source: &EnvironmentRow,
        name: Option<String>,
        slug: Option<String>,
    ) -> ControlResult<(EnvironmentRow, EnvironmentSync)> {
        let plan = self.sync_plan(caller, project, source, None).await?;
        let body = CreateEnvironment {
            name,
            slug,
            ..Default::default()
        };
        let created = create_environment(self, project, body).await?;
        if let Err(e) = self.write_plan(caller, &created, plan.writes).await {
            if let Err(undo) = self.store()?.delete_environment(&created.id).await {
                tracing::error!(environment = created.id, "undoing a duplicate: {undo}");
            }
            return Err(e);
        }
        let report = EnvironmentSync {
            environment_id: created.id.clone(),
            environment: created.name.clone(),
            from_environment_id: source.id.clone(),
            from_environment: source.name.clone(),
            applied: true,
            changes: plan.changes,
            unchanged: 0,
            skipped: plan.skipped,
        };
        Ok((created, report))
    }
}
