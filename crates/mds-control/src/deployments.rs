//! Deployments as the API shows and changes them: creating one (its name
//! is its host), publishing a sandbox's workspace as the next version,
//! switching what serves in an environment (promote, rollback, redeploy),
//! linking a project, a database or a volume, and the wire views of all of
//! it. Serving itself is the [`Deployer`](crate::deployer::Deployer)'s.

use std::collections::BTreeMap;
use std::sync::Arc;

use mds_api_types::deployments::{
    CreateDeployment, DatabaseLink, Deployment, DeploymentEnvironment, DeploymentLogs,
    DeploymentVariable, Instance, InstanceLogs, Publish, Published, PublishedService, Release,
    ReleaseMetadata, ServiceMetadata, SetDeploymentVariables, Version, VolumeClaim,
};
use mds_core::ids::IdKind;
use mds_core::kinds::{ReleaseKind, ServiceKind};
use mds_core::{names, vars};
use mds_store::{
    DeploymentPatch, DeploymentRow, EnvironmentRow, InstanceRow, NewDeployment, NewVersion,
    ProjectRow, SandboxRow, StoreError, VariableScope, VersionRow,
};
use serde_json::{json, Map, Value};

use crate::projects::{load_project, resolve_environment};
use crate::variables::{object_entries, Entry};
use crate::{Caller, Control, ControlError, ControlResult};

/// Where a version goes, and what a deployment's `active_version_id`
/// reports, when no environment is named.
pub const DEFAULT_ENVIRONMENT: &str = "production";
/// The port a dynamic version is said to listen on when none is given;
/// the instance really listens on the `PORT` it is given.
const DEFAULT_PORT: i32 = 8080;
/// The longest deployment name.
const MAX_NAME: usize = 128;
/// What a linked Postgres injects at boot.
const DATABASE_VARIABLES: [&str; 7] = [
    "DATABASE_URL",
    "DATABASE_URL_UNPOOLED",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
];

/// A version's MIOSA release id: the same suffix, `rel_` for `ver_`.
pub fn release_id(version_id: &str) -> String {
    format!("rel_{}", version_id.trim_start_matches("ver_"))
}

pub fn version_id_of_release(release_id: &str) -> String {
    format!("ver_{}", release_id.trim_start_matches("rel_"))
}

fn artifact_uri(v: &VersionRow) -> Option<String> {
    v.artifact_sha256
        .as_ref()
        .map(|sha| format!("mds://releases/sha256/{sha}.tar.zst"))
}

pub fn version_view(v: &VersionRow, project_id: Option<&str>) -> Version {
    Version {
        id: v.id.clone(),
        deployment_id: v.deployment_id.clone(),
        tenant_id: v.tenant_id.clone(),
        workspace_id: None,
        project_id: project_id.map(str::to_string),
        created_by: None,
        source_sandbox_id: v.source_sandbox_id.clone(),
        build_id: None,
        version_number: v.version_number,
        kind: v.kind.clone(),
        state: v.state.clone(),
        artifact_uri: artifact_uri(v),
        artifact_manifest: v.manifest.clone(),
        artifact_sha256: v.artifact_sha256.clone(),
        artifact_bytes: v.artifact_bytes,
        runtime_image: None,
        runtime_command: v.runtime_command.clone(),
        runtime_port: v.runtime_port,
        health_check_path: v.health_check_path.clone(),
        build_log_uri: None,
        output_path: v.output_path.clone(),
        entrypoint: v.entrypoint.clone(),
        metadata: Value::Object(Map::new()),
        promoted_at: v.promoted_at,
        archived_at: v.archived_at,
        ready_at: v.ready_at,
        created_at: v.created_at,
        updated_at: v.updated_at,
    }
}

pub fn release_view(v: &VersionRow, project_id: Option<&str>) -> Release {
    Release {
        id: release_id(&v.id),
        deployment_id: v.deployment_id.clone(),
        deployment_version_id: v.id.clone(),
        tenant_id: v.tenant_id.clone(),
        project_id: project_id.map(str::to_string),
        source_sandbox_id: v.source_sandbox_id.clone(),
        kind: match v.kind.parse() {
            Ok(ReleaseKind::Static) => "static",
            Ok(ReleaseKind::Dynamic) | Err(_) => "rootfs",
        }
        .to_string(),
        state: v.state.clone(),
        artifact_uri: artifact_uri(v),
        artifact_sha256: v.artifact_sha256.clone(),
        artifact_manifest: v.manifest.clone(),
        storage_backend: "local".to_string(),
        storage_uri: artifact_uri(v),
        sha256: v.artifact_sha256.clone(),
        size_bytes: v.artifact_bytes,
        start_command: v.runtime_command.clone(),
        port: v.runtime_port,
        health_check_path: v.health_check_path.clone(),
        metadata: ReleaseMetadata {
            version_number: v.version_number,
        },
        ready_at: v.ready_at,
        archived_at: v.archived_at,
        created_at: v.created_at,
        updated_at: v.updated_at,
    }
}

pub fn instance_view(i: &InstanceRow, health_check_path: Option<&str>) -> Instance {
    Instance {
        id: i.id.clone(),
        deployment_id: i.deployment_id.clone(),
        environment_id: i.environment_id.clone(),
        environment: i.environment.clone(),
        service_id: None,
        release_id: release_id(&i.version_id),
        version_id: i.version_id.clone(),
        tenant_id: i.tenant_id.clone(),
        host_id: "local".to_string(),
        desired_state: i.desired_state.clone(),
        state: i.state.clone(),
        ip_address: "127.0.0.1".to_string(),
        port: i.port,
        health_check_path: health_check_path.map(str::to_string),
        last_health_check_at: i.last_health_check_at,
        last_heartbeat_at: i.last_health_check_at,
        started_at: i.started_at,
        stopped_at: i.stopped_at,
        error_message: i.error_message.clone(),
        restart_count: i.restart_count,
        metadata: Value::Object(Map::new()),
        created_at: i.created_at,
        updated_at: i.updated_at,
    }
}

/// A deployment's state, from whether it was stopped, what serves, and
/// its newest version.
fn deployment_state(stopped: bool, serving: bool, latest: Option<&VersionRow>) -> &'static str {
    if stopped {
        "stopped"
    } else if serving {
        "running"
    } else {
        match latest.map(|v| v.state.as_str()) {
            Some("building" | "created") => "building",
            Some("failed") => "failed",
            _ => "pending",
        }
    }
}

fn check_health_path(path: &str) -> ControlResult<()> {
    if !path.starts_with('/')
        || path.len() > 1024
        || path.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(ControlError::invalid(
            "health_check_path",
            "must be a path starting with / without spaces or control characters",
        ));
    }
    Ok(())
}

fn check_port(port: i64) -> ControlResult<i32> {
    if !(1..=65535).contains(&port) {
        return Err(ControlError::invalid("port", "must be from 1 to 65535"));
    }
    Ok(port as i32)
}

fn check_command(field: &str, command: &str) -> ControlResult<()> {
    if command.trim().is_empty() || command.len() > 16 << 10 || command.contains('\0') {
        return Err(ControlError::invalid(
            field,
            "must be a non-empty shell command of at most 16 KiB without NUL",
        ));
    }
    Ok(())
}

fn check_commands(run: Option<&str>, build: Option<&str>) -> ControlResult<()> {
    if let Some(c) = run {
        check_command("run_command", c)?;
    }
    if let Some(c) = build {
        check_command("build_command", c)?;
    }
    Ok(())
}

/// The host label a deployment's name gives it.
pub fn slug_of(name: &str) -> ControlResult<String> {
    names::slugify(name).ok_or_else(|| {
        ControlError::invalid(
            "name",
            "must contain letters or digits (it names the deployment's host)",
        )
    })
}

/// `output_path` as a directory inside the jail: relative to
/// `/workspace` (or under it), without `..`.
fn output_dir(path: Option<&str>) -> ControlResult<String> {
    let path = path.unwrap_or(".").trim();
    let relative = path
        .strip_prefix("/workspace")
        .map(|p| p.trim_start_matches('/'))
        .unwrap_or(path);
    if relative.starts_with('/')
        || relative.split('/').any(|p| p == "..")
        || relative.chars().any(char::is_control)
        || relative.len() > 1024
    {
        return Err(ControlError::invalid(
            "output_path",
            "must be a directory of the workspace (relative, or under /workspace), without ..",
        ));
    }
    let relative = relative.trim_start_matches("./").trim_end_matches('/');
    Ok(if relative.is_empty() || relative == "." {
        "/workspace".to_string()
    } else {
        format!("/workspace/{relative}")
    })
}

/// A file of the release, relative and without `..`.
fn check_entrypoint(entrypoint: &str) -> ControlResult<()> {
    if entrypoint.starts_with('/')
        || entrypoint.split('/').any(|p| p == "..")
        || entrypoint.chars().any(char::is_control)
    {
        return Err(ControlError::invalid(
            "entrypoint",
            "must be a file of the release (relative, without ..)",
        ));
    }
    Ok(())
}

/// A checked version-to-be: its kind and how it runs.
struct Plan {
    kind: ReleaseKind,
    dir: String,
    entrypoint: Option<String>,
    run_command: Option<String>,
    port: Option<i32>,
    health: Option<String>,
}

impl Plan {
    /// Checks the request against the deployment's defaults.
    fn of(input: &Publish, deployment: &DeploymentRow) -> ControlResult<Self> {
        let dir = output_dir(input.output_path.as_deref())?;
        if let Some(c) = &input.run_command {
            check_command("run_command", c)?;
        }
        let run_command = input.run_command.clone().or(deployment.run_command.clone());
        let kind = match (input.kind.as_deref().unwrap_or("auto"), &run_command) {
            ("auto", Some(_)) | ("dynamic", Some(_)) => ReleaseKind::Dynamic,
            ("auto", None) | ("static", _) => ReleaseKind::Static,
            ("dynamic", None) => {
                return Err(ControlError::invalid(
                    "run_command",
                    "a dynamic version needs a run_command (set it on the deployment)",
                ))
            }
            (other, _) => {
                return Err(ControlError::invalid(
                    "kind",
                    format!("{other:?} is not one of auto, static, dynamic"),
                ))
            }
        };
        let (port, health) = if kind == ReleaseKind::Dynamic {
            let port = match input.port {
                Some(p) => check_port(p)?,
                None => deployment.port.unwrap_or(DEFAULT_PORT),
            };
            let health = input
                .health_check_path
                .clone()
                .or(deployment.health_check_path.clone())
                .unwrap_or_else(|| "/".to_string());
            check_health_path(&health)?;
            (Some(port), Some(health))
        } else {
            (None, None)
        };
        let entrypoint = input.entrypoint.clone().filter(|e| !e.is_empty());
        if let Some(e) = &entrypoint {
            check_entrypoint(e)?;
        }
        Ok(Self {
            kind,
            dir,
            entrypoint,
            run_command: run_command.filter(|_| kind == ReleaseKind::Dynamic),
            port,
            health,
        })
    }
}

/// The project a publish runs in: the deployment's, else the sandbox's
/// (adopted once the request is known to be good). Code from one project
/// never runs with another's secrets.
fn publish_project(deployment: &DeploymentRow, sandbox: &SandboxRow) -> ControlResult<String> {
    match (&deployment.project_id, &sandbox.project_id) {
        (Some(d), Some(s)) if d != s => Err(ControlError::conflict(
            "PROJECT_MISMATCH",
            format!("the sandbox belongs to project {s}, the deployment to {d}"),
        )),
        (Some(d), _) => Ok(d.clone()),
        (None, Some(s)) => Ok(s.clone()),
        (None, None) => Err(ControlError::invalid(
            "source_sandbox_id",
            "the sandbox has no project and neither has the deployment: create the sandbox \
             with project_id, or the deployment with metadata.project_id",
        )),
    }
}

/// The service a promoted version serves as, in MIOSA's terms.
fn published_service(
    deployment: &DeploymentRow,
    env: &EnvironmentRow,
    kind: ReleaseKind,
    url: &str,
) -> PublishedService {
    PublishedService {
        id: format!(
            "svc_{}_{}",
            deployment.id.trim_start_matches("dep_"),
            names::environment_slug(&env.name)
        ),
        deployment_id: deployment.id.clone(),
        environment_id: env.id.clone(),
        tenant_id: deployment.tenant_id.clone(),
        kind: match kind {
            ReleaseKind::Static => "static_web",
            ReleaseKind::Dynamic => "web",
        }
        .to_string(),
        name: deployment.slug.clone(),
        desired_replicas: 1,
        state: "healthy".to_string(),
        metadata: ServiceMetadata {
            url: url.to_string(),
        },
    }
}

/// Only a built version can serve.
fn check_servable(version: &VersionRow) -> ControlResult<()> {
    let details = || json!({ "version_id": version.id, "state": version.state });
    match version.state.as_str() {
        "ready" | "archived" => Ok(()),
        "failed" => Err(ControlError::conflict(
            "VERSION_FAILED",
            format!(
                "version {} failed to build and cannot serve; publish again",
                version.version_number
            ),
        )
        .with_details(details())),
        other => Err(ControlError::conflict(
            "VERSION_NOT_READY",
            format!("version {} is {other}", version.version_number),
        )
        .with_details(details())),
    }
}

impl Control {
    /// The caller's deployment, by id or slug.
    pub async fn deployment(&self, caller: &Caller, id: &str) -> ControlResult<DeploymentRow> {
        self.store()?
            .deployment(&caller.tenant_id, id)
            .await?
            .ok_or_else(|| ControlError::not_found("deployment", id))
    }

    /// The deployment's project: versions run in its environments.
    pub async fn deployment_project(&self, d: &DeploymentRow) -> ControlResult<Arc<ProjectRow>> {
        let project_id = d.project_id.as_deref().ok_or_else(|| {
            ControlError::conflict(
                "DEPLOYMENT_HAS_NO_PROJECT",
                "this deployment has no project yet: publish it from a sandbox of a project, or \
                 create it with metadata.project_id",
            )
        })?;
        self.store()?
            .project(&d.tenant_id, project_id)
            .await?
            .ok_or_else(|| ControlError::not_found("project", project_id))
    }

    /// The deployment's project and its environment `reference`
    /// (production when none).
    pub async fn deployment_environment(
        &self,
        d: &DeploymentRow,
        reference: Option<&str>,
    ) -> ControlResult<(Arc<ProjectRow>, EnvironmentRow)> {
        let project = self.deployment_project(d).await?;
        let env = resolve_environment(
            self.store()?,
            &project,
            Some(reference.unwrap_or(DEFAULT_ENVIRONMENT)),
        )
        .await?;
        Ok((project, env))
    }

    /// One of the deployment's versions, by id or number.
    pub async fn version(&self, d: &DeploymentRow, id: &str) -> ControlResult<VersionRow> {
        self.store()?
            .version(&d.id, id)
            .await?
            .ok_or_else(|| ControlError::not_found("version", id))
    }

    /// One of the deployment's runtime instances.
    pub async fn instance(&self, d: &DeploymentRow, id: &str) -> ControlResult<InstanceRow> {
        self.store()?
            .instance(&d.id, id)
            .await?
            .ok_or_else(|| ControlError::not_found("runtime instance", id))
    }

    /// A sandbox by id, or by the name of a live one.
    pub async fn find_sandbox(
        &self,
        caller: &Caller,
        reference: &str,
    ) -> ControlResult<SandboxRow> {
        let store = self.store()?;
        match store.sandbox(&caller.tenant_id, reference).await? {
            Some(sandbox) => Ok(sandbox),
            None => store
                .sandbox_by_name(&caller.tenant_id, reference)
                .await?
                .ok_or_else(|| ControlError::not_found("sandbox", reference)),
        }
    }

    /// A deployment as the SDK's `Deployment` reads it.
    pub async fn deployment_view(&self, d: &DeploymentRow) -> ControlResult<Deployment> {
        let store = self.store()?;
        let actives = store.active_versions(&d.id).await?;
        let versions = store.versions(&d.id, None).await?;
        let deployer = self.deployer()?;
        let environments: BTreeMap<String, DeploymentEnvironment> = actives
            .iter()
            .map(|a| {
                (
                    a.environment.clone(),
                    DeploymentEnvironment {
                        environment_id: a.environment_id.clone(),
                        active_version_id: a.active_version_id.clone(),
                        active_release_id: release_id(&a.active_version_id),
                        previous_version_id: a.previous_version_id.clone(),
                        url: deployer.public_url(&d.slug, &a.environment),
                        updated_at: a.updated_at,
                    },
                )
            })
            .collect();
        let production = actives
            .iter()
            .find(|a| a.environment == DEFAULT_ENVIRONMENT);
        // What serves in production (else the newest version) describes it.
        let serving =
            production.and_then(|p| versions.iter().find(|v| v.id == p.active_version_id));
        let latest = versions.first();
        Ok(Deployment {
            id: d.id.clone(),
            tenant_id: d.tenant_id.clone(),
            owner_id: None,
            workspace_id: None,
            project_id: d.project_id.clone(),
            name: d.name.clone(),
            slug: d.slug.clone(),
            repo_url: None,
            repo_provider: None,
            branch: None,
            build_command: d.build_command.clone(),
            run_command: d.run_command.clone(),
            port: d.port,
            health_check_path: d.health_check_path.clone(),
            kind: serving.or(latest).map(|v| v.kind.clone()),
            runtime_image: None,
            current_build_id: None,
            active_version_id: production.map(|p| p.active_version_id.clone()),
            active_release_id: production.map(|p| release_id(&p.active_version_id)),
            running_artifact_sha256: serving.and_then(|v| v.artifact_sha256.clone()),
            source_type: "sandbox".to_string(),
            state: deployment_state(d.stopped, !actives.is_empty(), latest).to_string(),
            auto_deploy: false,
            custom_domain_id: None,
            linked_database_id: d.linked_database_id.clone(),
            metadata: d.metadata.clone(),
            public_url: deployer.public_url(&d.slug, DEFAULT_ENVIRONMENT),
            auto_subdomain: format!("{}.{DEFAULT_ENVIRONMENT}.localhost", d.slug),
            environments,
            created_at: d.created_at,
            updated_at: d.updated_at,
        })
    }

    /// Makes a deployment. Its port, health check path and project may
    /// come in `metadata` (the SDK's create sends only name and metadata).
    pub async fn create_deployment(
        &self,
        caller: &Caller,
        input: CreateDeployment,
    ) -> ControlResult<DeploymentRow> {
        let store = self.store()?;
        let name = input.name.ok_or_else(|| ControlError::missing("name"))?;
        let name = names::validate_display_name("name", &name, MAX_NAME)?;
        let slug = slug_of(&name)?;
        check_commands(input.run_command.as_deref(), input.build_command.as_deref())?;
        let metadata = match input.metadata {
            None | Some(Value::Null) => json!({}),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err(ControlError::invalid("metadata", "must be an object")),
        };
        let port = match input.port {
            Some(p) => Some(check_port(p)?),
            None => metadata["port"].as_i64().map(check_port).transpose()?,
        };
        let health_check_path = input
            .health_check_path
            .or_else(|| metadata["health_check_path"].as_str().map(str::to_string));
        if let Some(p) = &health_check_path {
            check_health_path(p)?;
        }
        let project_ref = input
            .project_id
            .or(input.project_slug)
            .or_else(|| metadata["project_id"].as_str().map(str::to_string));
        let project = match project_ref {
            Some(reference) => Some(load_project(store, caller, &reference).await?),
            None => None,
        };
        let id = IdKind::Deployment.mint();
        let made = store
            .create_deployment(&NewDeployment {
                id: &id,
                tenant_id: &caller.tenant_id,
                project_id: project.as_ref().map(|p| p.id.as_str()),
                name: &name,
                slug: &slug,
                run_command: input.run_command.as_deref(),
                build_command: input.build_command.as_deref(),
                port,
                health_check_path: health_check_path.as_deref(),
                metadata: &metadata,
            })
            .await;
        match made {
            Ok(row) => {
                tracing::info!(deployment = row.id, slug = row.slug, "deployment created");
                Ok(row)
            }
            Err(StoreError::Conflict { .. }) => Err(ControlError::conflict(
                "DEPLOYMENT_NAME_TAKEN",
                format!(
                    "a deployment is already called {slug:?} (names are hosts: \
                     {slug}.production.localhost)"
                ),
            )
            .with_details(json!({ "field": "name" }))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn update_deployment(
        &self,
        d: &DeploymentRow,
        changes: CreateDeployment,
    ) -> ControlResult<DeploymentRow> {
        check_commands(
            changes.run_command.as_deref(),
            changes.build_command.as_deref(),
        )?;
        if let Some(p) = &changes.health_check_path {
            check_health_path(p)?;
        }
        let name = changes
            .name
            .map(|n| names::validate_display_name("name", &n, MAX_NAME))
            .transpose()?;
        let patch = DeploymentPatch {
            name,
            run_command: changes.run_command,
            build_command: changes.build_command,
            port: changes.port.map(check_port).transpose()?,
            health_check_path: changes.health_check_path,
            linked_database_id: None,
        };
        self.store()?
            .update_deployment(&d.id, &patch)
            .await?
            .ok_or_else(|| ControlError::not_found("deployment", &d.id))
    }

    /// Stops serving everywhere until the next promote.
    pub async fn stop_deployment(&self, d: &DeploymentRow) -> ControlResult<()> {
        self.store()?.set_deployment_stopped(&d.id, true).await?;
        self.deployer()?.stop_deployment(self, &d.id).await;
        Ok(())
    }

    /// `POST /sandboxes/{id}/deploy`: the deployment `deployment_id` names,
    /// or the one called `name` (made for the sandbox's project if there
    /// is none).
    pub async fn deployment_for_sandbox(
        &self,
        caller: &Caller,
        sandbox: &SandboxRow,
        input: &Publish,
    ) -> ControlResult<DeploymentRow> {
        let name = match (input.deployment_id.as_deref(), input.name.as_deref()) {
            (Some(id), _) => return self.deployment(caller, id).await,
            (None, Some(name)) => name,
            (None, None) => return Err(ControlError::missing("name")),
        };
        let store = self.store()?;
        if let Some(existing) = store.deployment(&caller.tenant_id, &slug_of(name)?).await? {
            return Ok(existing);
        }
        // Refused before anything is made: no half-made deployment.
        if sandbox.project_id.is_none() {
            return Err(ControlError::invalid(
                "source_sandbox_id",
                "the sandbox has no project: create it with project_id to deploy it",
            ));
        }
        self.create_deployment(
            caller,
            CreateDeployment {
                name: Some(name.to_string()),
                run_command: input.run_command.clone(),
                port: input.port,
                health_check_path: input.health_check_path.clone(),
                project_id: sandbox.project_id.clone(),
                ..CreateDeployment::default()
            },
        )
        .await
    }

    /// Publishes the sandbox's workspace as the deployment's next version
    /// and, unless `promote: false`, promotes it.
    pub async fn publish(
        &self,
        caller: &Caller,
        mut deployment: DeploymentRow,
        input: Publish,
    ) -> ControlResult<Published> {
        let store = self.store()?;
        let sandbox_ref = input
            .source_sandbox_id
            .as_deref()
            .or(input.sandbox_id.as_deref())
            .ok_or_else(|| ControlError::missing("source_sandbox_id"))?;
        let sandbox = self.find_sandbox(caller, sandbox_ref).await?;
        if sandbox.state == "destroyed" {
            return Err(ControlError::conflict(
                "SANDBOX_DESTROYED",
                format!("sandbox {sandbox_ref} was destroyed; its workspace is gone"),
            ));
        }
        let project_id = publish_project(&deployment, &sandbox)?;
        let project = load_project(store, caller, &project_id).await?;
        // An app service's deployment serves in the service's environment
        // unless told otherwise (the SDK's publish does not send one).
        let home = deployment.metadata["service"]["environment_id"].as_str();
        let env = resolve_environment(
            store,
            &project,
            Some(
                input
                    .environment
                    .as_deref()
                    .or(home)
                    .unwrap_or(DEFAULT_ENVIRONMENT),
            ),
        )
        .await?;
        let plan = Plan::of(&input, &deployment)?;
        // Sandboxes not up yet: refused before the project is adopted.
        self.sandboxes()?;
        if deployment.project_id.is_none() {
            self.link_project(&mut deployment, &project_id).await?;
        }
        let version = self.pack_version(&deployment, &sandbox, &plan).await?;
        let deployer = self.deployer()?;
        // Each publish may push an old version past retention.
        if let Err(e) = deployer.collect_releases(self).await {
            tracing::warn!(error = %e, "collecting releases");
        }
        let promote = input.promote.unwrap_or(true);
        if promote {
            store.set_deployment_stopped(&deployment.id, false).await?;
            deployer
                .serve(self, &deployment, &project, &env, &version, true)
                .await?;
        }
        let version = self.version(&deployment, &version.id).await?;
        let url = deployer.public_url(&deployment.slug, &env.name);
        let services = if promote {
            vec![published_service(&deployment, &env, plan.kind, &url)]
        } else {
            Vec::new()
        };
        Ok(Published {
            deployment: self.deployment_view(&deployment).await?,
            version: version_view(&version, Some(&project.id)),
            release: release_view(&version, Some(&project.id)),
            services,
            promoted: promote,
            environment: env.name,
            url,
        })
    }

    /// Links a deployment without a project to `project_id`, unless another
    /// publish linked it elsewhere meanwhile.
    async fn link_project(
        &self,
        deployment: &mut DeploymentRow,
        project_id: &str,
    ) -> ControlResult<()> {
        deployment.project_id = self
            .store()?
            .adopt_project(&deployment.id, project_id)
            .await?;
        if deployment.project_id.as_deref() != Some(project_id) {
            return Err(ControlError::conflict(
                "PROJECT_MISMATCH",
                "the deployment was just linked to another project; publish from a sandbox of it",
            ));
        }
        Ok(())
    }

    /// Records the version, packs the sandbox's directory into its release
    /// and records the outcome; a failed pack is a failed version.
    async fn pack_version(
        &self,
        deployment: &DeploymentRow,
        sandbox: &SandboxRow,
        plan: &Plan,
    ) -> ControlResult<VersionRow> {
        let store = self.store()?;
        let version = store
            .create_version(&NewVersion {
                id: &IdKind::Version.mint(),
                deployment_id: &deployment.id,
                tenant_id: &deployment.tenant_id,
                kind: plan.kind.as_str(),
                source_sandbox_id: &sandbox.id,
                output_path: Some(&plan.dir),
                entrypoint: plan.entrypoint.as_deref(),
                runtime_command: plan.run_command.as_deref(),
                runtime_port: plan.port,
                health_check_path: plan.health.as_deref(),
            })
            .await?;
        let began = std::time::Instant::now();
        store
            .finish_version_stage(
                &version.id,
                "building",
                None,
                &format!("packing {} of sandbox {}\n", plan.dir, sandbox.id),
            )
            .await?;
        let packed = self
            .deployer()?
            .pack(self.sandboxes()?, &sandbox.id, &plan.dir)
            .await;
        let stored = match packed {
            Ok(stored) => stored,
            Err(why) => {
                let failed = store
                    .finish_version_stage(&version.id, "failed", None, &format!("failed: {why}\n"))
                    .await?;
                return Err(ControlError::failed(
                    "BUILD_FAILED",
                    format!("version {} failed: {why}", failed.version_number),
                )
                .with_details(json!({
                    "version_id": failed.id,
                    "version_number": failed.version_number,
                    "log": failed.build_log,
                })));
            }
        };
        let manifest = json!({
            "files": stored.files,
            "total_bytes": stored.file_bytes,
            "entrypoint": plan.entrypoint,
            "tar_bytes": stored.tar_bytes,
        });
        let version = store
            .finish_version_stage(
                &version.id,
                "ready",
                Some((&stored.sha256, stored.bytes as i64, &manifest)),
                &format!(
                    "{} files, {} bytes; artifact sha256:{} ({} bytes, tar+zstd) in {} ms\n",
                    stored.files,
                    stored.file_bytes,
                    stored.sha256,
                    stored.bytes,
                    began.elapsed().as_millis()
                ),
            )
            .await?;
        tracing::info!(
            deployment = deployment.id,
            version = version.id,
            number = version.version_number,
            sha256 = version.artifact_sha256,
            "version published"
        );
        Ok(version)
    }

    /// Serves `version` in the environment (production when none), if it
    /// can serve; answers the deployment as it is then.
    pub async fn promote(
        &self,
        deployment: &DeploymentRow,
        version: &VersionRow,
        environment: Option<&str>,
    ) -> ControlResult<Deployment> {
        check_servable(version)?;
        let (project, env) = self.deployment_environment(deployment, environment).await?;
        let store = self.store()?;
        store.set_deployment_stopped(&deployment.id, false).await?;
        self.deployer()?
            .serve(self, deployment, &project, &env, version, true)
            .await?;
        tracing::info!(
            deployment = deployment.id,
            version = version.id,
            environment = env.name,
            "version promoted"
        );
        let deployment = store
            .deployment(&deployment.tenant_id, &deployment.id)
            .await?
            .ok_or_else(|| ControlError::not_found("deployment", &deployment.id))?;
        self.deployment_view(&deployment).await
    }

    /// What a rollback goes back to: `version_id`, or the version active
    /// in the environment before the current one.
    pub async fn rollback_target(
        &self,
        deployment: &DeploymentRow,
        environment: Option<&str>,
        version_id: Option<&str>,
    ) -> ControlResult<VersionRow> {
        if let Some(v) = version_id {
            return self.version(deployment, v).await;
        }
        let environment = environment.unwrap_or(DEFAULT_ENVIRONMENT);
        let actives = self.store()?.active_versions(&deployment.id).await?;
        let active = actives
            .iter()
            .find(|a| a.environment == environment || a.environment_id == environment)
            .ok_or_else(|| {
                ControlError::conflict(
                    "NOTHING_TO_ROLL_BACK",
                    format!("no version serves in {environment} yet"),
                )
            })?;
        let previous = active.previous_version_id.as_deref().ok_or_else(|| {
            ControlError::conflict(
                "NOTHING_TO_ROLL_BACK",
                format!("{environment} has had only one version; name a version_id"),
            )
        })?;
        self.version(deployment, previous).await
    }

    /// Boots the active versions again (of one environment, if named):
    /// new instances with the variables as they are now.
    pub async fn redeploy(
        &self,
        deployment: &DeploymentRow,
        environment: Option<&str>,
    ) -> ControlResult<Deployment> {
        let actives = self.store()?.active_versions(&deployment.id).await?;
        if actives.is_empty() {
            return Err(ControlError::conflict(
                "NOTHING_TO_REDEPLOY",
                "no version serves anywhere yet; publish first",
            ));
        }
        for active in actives {
            if environment.is_some_and(|e| e != active.environment) {
                continue;
            }
            let version = self.version(deployment, &active.active_version_id).await?;
            let (project, env) = self
                .deployment_environment(deployment, Some(&active.environment))
                .await?;
            self.deployer()?
                .serve(self, deployment, &project, &env, &version, true)
                .await?;
        }
        self.deployment_view(deployment).await
    }

    /// The deployment's runtime instances, with their versions' health
    /// check paths.
    pub async fn instance_views(&self, d: &DeploymentRow) -> ControlResult<Vec<Instance>> {
        let store = self.store()?;
        let rows = store.instances(&d.id).await?;
        let versions = store.versions(&d.id, None).await?;
        let health = |i: &InstanceRow| {
            versions
                .iter()
                .find(|v| v.id == i.version_id)
                .and_then(|v| v.health_check_path.as_deref())
        };
        Ok(rows.iter().map(|i| instance_view(i, health(i))).collect())
    }

    /// The last `lines` lines one instance printed.
    pub fn instance_logs(&self, i: &InstanceRow, lines: usize) -> ControlResult<InstanceLogs> {
        let lines = self
            .deployer()?
            .live(&i.id)
            .map(|l| l.logs.tail(lines))
            .unwrap_or_default();
        Ok(InstanceLogs {
            instance_id: i.id.clone(),
            state: i.state.clone(),
            logs: lines.join("\n"),
            lines,
        })
    }

    /// The last `n` lines the deployment's live instances printed (of one
    /// environment, by name or id, if given).
    pub async fn deployment_logs(
        &self,
        d: &DeploymentRow,
        environment: Option<&str>,
        n: usize,
    ) -> ControlResult<DeploymentLogs> {
        let deployer = self.deployer()?;
        let mut lines = Vec::new();
        let mut instances = Vec::new();
        for i in self.store()?.instances(&d.id).await? {
            if environment.is_some_and(|e| e != i.environment && e != i.environment_id) {
                continue;
            }
            if let Some(live) = deployer.live(&i.id) {
                instances.push(i.id.clone());
                lines.extend(
                    live.logs
                        .tail(n)
                        .into_iter()
                        .map(|l| format!("[{} {}] {l}", i.environment, i.id)),
                );
            }
        }
        let lines = lines.split_off(lines.len().saturating_sub(n));
        Ok(DeploymentLogs {
            deployment_id: d.id.clone(),
            instances,
            logs: lines.join("\n"),
            lines,
        })
    }

    /// Every environment's variables of the deployment, as previews.
    pub async fn deployment_variables(
        &self,
        d: &DeploymentRow,
    ) -> ControlResult<Vec<DeploymentVariable>> {
        let project = self.deployment_project(d).await?;
        let mut rows = Vec::new();
        for env in &project.environments {
            let scope = VariableScope::Deployment {
                deployment_id: &d.id,
                environment_id: &env.id,
            };
            for (row, value) in self.open_variables(scope).await? {
                rows.push(DeploymentVariable {
                    key: row.name.clone(),
                    preview: vars::preview(&value, row.is_secret),
                    is_secret: row.is_secret,
                    environment: env.name.clone(),
                    environment_id: env.id.clone(),
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                    name: row.name,
                });
            }
        }
        Ok(rows)
    }

    /// Sets variables of one environment (production unless named); they
    /// reach the next boot (a promote, rollback or redeploy).
    pub async fn set_deployment_variables(
        &self,
        caller: &Caller,
        d: &DeploymentRow,
        input: SetDeploymentVariables,
    ) -> ControlResult<()> {
        let (_, env) = self
            .deployment_environment(d, input.environment.as_deref())
            .await?;
        let raw = input
            .env
            .or(input.variables)
            .ok_or_else(|| ControlError::missing("env"))?;
        let map = object_entries("env", Some(&raw))?;
        if map.is_empty() {
            return Err(ControlError::invalid(
                "env",
                "must name at least one variable",
            ));
        }
        let secret = input.secret.or(input.is_secret);
        let entries = map
            .into_iter()
            .map(|(name, value)| Entry {
                name,
                value,
                secret,
            })
            .collect();
        let scope = VariableScope::Deployment {
            deployment_id: &d.id,
            environment_id: &env.id,
        };
        self.write_variables(caller, scope, entries).await
    }

    /// Removes a variable of one environment (production unless named).
    pub async fn unset_deployment_variable(
        &self,
        d: &DeploymentRow,
        environment: Option<&str>,
        name: &str,
    ) -> ControlResult<()> {
        let (_, env) = self.deployment_environment(d, environment).await?;
        let scope = VariableScope::Deployment {
            deployment_id: &d.id,
            environment_id: &env.id,
        };
        if !self.store()?.delete_variable(scope, name).await? {
            return Err(ControlError::not_found("variable", name));
        }
        Ok(())
    }

    /// Links a Postgres data service of the deployment's project (by id or
    /// name; the first one, else a new one): its `DATABASE_URL` is
    /// injected at boot.
    pub async fn link_database(
        &self,
        d: &DeploymentRow,
        reference: Option<&str>,
        mut environment: Option<String>,
    ) -> ControlResult<DatabaseLink> {
        let project = self.deployment_project(d).await?;
        let store = self.store()?;
        let mut postgres = store
            .data_services(&project.id)
            .await?
            .into_iter()
            .filter(|s| s.kind.parse() == Ok(ServiceKind::Postgres));
        let service = match reference {
            Some(reference) => match postgres
                .find(|s| s.id == reference || s.name.eq_ignore_ascii_case(reference))
            {
                Some(service) => service,
                // A standalone database of the caller's: attached to the
                // project's environment (the default one unless named).
                None => {
                    let standalone = store
                        .data_service(&d.tenant_id, reference)
                        .await?
                        .filter(|s| s.standalone && s.kind.parse() == Ok(ServiceKind::Postgres))
                        .ok_or_else(|| ControlError::not_found("database", reference))?;
                    let asked = environment.as_deref().filter(|e| *e != "all");
                    let adopted =
                        crate::standalone::adopt(self, &standalone, &project, asked).await?;
                    // It is bound in that one environment, not in all.
                    if let Some(env) = project
                        .environments
                        .iter()
                        .find(|e| adopted.environment_id.as_deref() == Some(e.id.as_str()))
                    {
                        environment = Some(env.name.clone());
                    }
                    adopted
                }
            },
            None => match postgres.next() {
                Some(existing) => existing,
                None => {
                    crate::attach::attach(
                        self,
                        &project,
                        mds_core::kinds::ServiceKind::Postgres,
                        None,
                        None,
                        &Default::default(),
                    )
                    .await?
                }
            },
        };
        let d = store
            .update_deployment(
                &d.id,
                &DeploymentPatch {
                    linked_database_id: Some(service.id.clone()),
                    ..DeploymentPatch::default()
                },
            )
            .await?
            .ok_or_else(|| ControlError::not_found("deployment", &d.id))?;
        Ok(DatabaseLink {
            deployment_id: d.id,
            database_id: service.id.clone(),
            linked_database_id: service.id,
            project_id: project.id.clone(),
            environment: environment.unwrap_or_else(|| "all".to_string()),
            env_vars: DATABASE_VARIABLES.iter().map(|v| v.to_string()).collect(),
            attached: true,
        })
    }

    /// Has the deployment's instances in an environment mount a volume of
    /// its project (at `/mnt/NAME` unless given).
    pub async fn claim_volume(
        &self,
        caller: &Caller,
        d: &DeploymentRow,
        environment: Option<&str>,
        volume: Option<&str>,
        mount_path: Option<String>,
    ) -> ControlResult<VolumeClaim> {
        let (project, env) = self.deployment_environment(d, environment).await?;
        let store = self.store()?;
        let reference = volume.ok_or_else(|| ControlError::missing("volume_id"))?;
        let volume = store
            .volume(&caller.tenant_id, reference)
            .await?
            .ok_or_else(|| ControlError::not_found("volume", reference))?;
        if volume
            .project_id
            .as_deref()
            .is_some_and(|p| p != project.id)
        {
            return Err(ControlError::conflict(
                "PROJECT_MISMATCH",
                format!("volume {} belongs to another project", volume.id),
            ));
        }
        let mount_path = mount_path.unwrap_or_else(|| format!("/mnt/{}", volume.name));
        mds_runtime::jail::check_mount_path(&mount_path)
            .map_err(|why| ControlError::invalid("mount_path", why))?;
        store
            .add_volume_claim(&d.id, &env.id, &volume.id, &mount_path)
            .await?;
        Ok(VolumeClaim {
            deployment_id: d.id.clone(),
            environment: env.name,
            volume_id: volume.id,
            mount_path,
        })
    }

    /// The volumes the deployment's instances mount in an environment.
    pub async fn volume_claims(
        &self,
        d: &DeploymentRow,
        environment: Option<&str>,
    ) -> ControlResult<Vec<VolumeClaim>> {
        let (_, env) = self.deployment_environment(d, environment).await?;
        let claims = self.store()?.volume_claims(&d.id, &env.id).await?;
        Ok(claims
            .into_iter()
            .map(|c| VolumeClaim {
                deployment_id: d.id.clone(),
                environment: env.name.clone(),
                volume_id: c.volume_id,
                mount_path: c.mount_path,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_ids_map_both_ways() {
        assert_eq!(release_id("ver_abc"), "rel_abc");
        assert_eq!(version_id_of_release("rel_abc"), "ver_abc");
    }

    #[test]
    fn output_dirs_stay_in_the_workspace() {
        for (given, want) in [
            (None, Some("/workspace")),
            (Some("."), Some("/workspace")),
            (Some("dist/"), Some("/workspace/dist")),
            (Some("/workspace/dist"), Some("/workspace/dist")),
            (Some("./site"), Some("/workspace/site")),
            (Some("../etc"), None),
            (Some("/etc"), None),
        ] {
            assert_eq!(output_dir(given).ok().as_deref(), want, "{given:?}");
        }
    }

    #[test]
    fn state_follows_what_serves() {
        assert_eq!(deployment_state(true, true, None), "stopped");
        assert_eq!(deployment_state(false, true, None), "running");
        assert_eq!(deployment_state(false, false, None), "pending");
    }
}
