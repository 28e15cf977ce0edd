//! Sandboxes: making one in a project environment, booting it (its
//! variables resolved then, and kept until its next boot), preparing a
//! command to run in it, halting, resuming and destroying it, and its own
//! sealed variables. A sandbox's environment defaults to `staging`, so
//! that development never writes to production by accident.

use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::time::Duration;

use mds_api_types::sandboxes::{CreateSandbox, Exec, Readiness, Sandbox, SandboxEnv, SandboxVar};
use mds_core::ids::IdKind;
use mds_runtime::jail::Mount;
use mds_store::{EnvironmentRow, NewSandbox, ProjectRow, SandboxRow, StoreError};
use serde_json::{json, Map, Value};

use crate::projects::{load_project, resolve_environment};
use crate::variables::{check_entry, may_steer_programs, object_entries};
use crate::{BootEnv, Caller, Control, ControlError, ControlResult};

/// The longest command line (the kernel refuses much longer arguments).
const MAX_COMMAND_BYTES: usize = 64 << 10;
/// The longest a command may run.
const MAX_TIMEOUT_SECS: f64 = 600.0;
const DEFAULT_TIMEOUT_SECS: f64 = 60.0;
/// Where a sandbox boots when its creator names no environment.
const DEFAULT_ENVIRONMENT: &str = "staging";
/// The readiness components the SDK knows.
const COMPONENTS: [&str; 8] = [
    "command_agent",
    "process_control",
    "resource_contract",
    "clock",
    "identity",
    "durability",
    "filesystem",
    "internal_probe",
];

/// A sandbox as the SDK's `Sandbox` reads it.
pub fn sandbox_view(row: &SandboxRow) -> Sandbox {
    let mut metadata = row.metadata.as_object().cloned().unwrap_or_default();
    if let Some(environment) = &row.environment {
        metadata.insert("environment".into(), json!(environment));
    }
    if let Some(error) = &row.last_error {
        metadata.insert("last_error".into(), json!(error));
    }
    Sandbox {
        id: row.id.clone(),
        state: row.state.clone(),
        ready: row.state == "running",
        template_id: row.template_id.clone(),
        tenant_id: row.tenant_id.clone(),
        project_id: row.project_id.clone(),
        project_slug: row.project_slug.clone(),
        project_name: row.project_name.clone(),
        environment: row.environment.clone(),
        environment_id: row.environment_id.clone(),
        name: row.name.clone(),
        slug: row.name.clone(),
        tags: row.tags.clone(),
        metadata,
        persistent: false,
        always_on: false,
        boot_path: "bubblewrap".to_string(),
        boot_ms: row.boot_ms,
        created_at: row.created_at,
        updated_at: row.updated_at,
        started_at: row.started_at,
        ready_at: row.ready_at,
        stopped_at: row.stopped_at,
        destroyed_at: row.destroyed_at,
    }
}

pub fn readiness_view(row: &SandboxRow) -> Readiness {
    let ready = row.state == "running";
    let status = if ready { "ready" } else { "not_ready" };
    Readiness {
        ready,
        state: row.state.clone(),
        status: status.to_string(),
        components: COMPONENTS
            .iter()
            .map(|c| (c.to_string(), status.to_string()))
            .collect(),
    }
}

/// A sandbox of a project boots with its secrets (binding credentials,
/// secret variables) and its commands can print them: creating, resuming
/// or running one needs `env:reveal`, as reading those values does.
fn require_reveal(caller: &Caller, project: Option<&str>) -> ControlResult<()> {
    if project.is_some() {
        caller.require("env:reveal")?;
    }
    Ok(())
}

fn destroyed(id: &str) -> ControlError {
    ControlError::conflict("SANDBOX_DESTROYED", format!("sandbox {id} was destroyed"))
}

/// A command ready to run: the sandbox, its variables and mounts.
pub struct PreparedExec {
    pub sandbox_id: String,
    /// Its volumes, per their live leases.
    pub mounts: Vec<Mount>,
    pub env: Vec<(String, String)>,
    pub command: String,
    pub cwd: Option<String>,
    pub timeout: Duration,
}

/// The command, its directory and its timeout, checked.
fn check_exec(input: &Exec) -> ControlResult<(String, Option<String>, Duration)> {
    let command = input
        .command
        .clone()
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| ControlError::missing("command"))?;
    if command.contains('\0') {
        return Err(ControlError::invalid("command", "cannot contain NUL"));
    }
    if command.len() > MAX_COMMAND_BYTES {
        return Err(ControlError::invalid(
            "command",
            format!("must be at most {MAX_COMMAND_BYTES} bytes; put longer scripts in a file"),
        ));
    }
    let timeout = input
        .timeout
        .or(input.timeout_sec)
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    if timeout > MAX_TIMEOUT_SECS {
        return Err(ControlError::failed(
            "TIMEOUT_TOO_LONG",
            format!("timeout: at most {MAX_TIMEOUT_SECS} seconds"),
        )
        .with_details(json!({ "field": "timeout", "max": MAX_TIMEOUT_SECS })));
    }
    if timeout.is_nan() || timeout <= 0.0 {
        return Err(ControlError::invalid(
            "timeout",
            "must be a positive number of seconds",
        ));
    }
    let cwd = input.cwd.clone().or(input.working_dir.clone());
    if cwd.as_deref().is_some_and(|c| c.contains('\0')) {
        return Err(ControlError::invalid("cwd", "cannot contain NUL"));
    }
    Ok((command, cwd, Duration::from_secs_f64(timeout)))
}

impl Control {
    /// The caller's sandbox.
    pub async fn sandbox(&self, caller: &Caller, id: &str) -> ControlResult<SandboxRow> {
        self.store()?
            .sandbox(&caller.tenant_id, id)
            .await?
            .ok_or_else(|| ControlError::not_found("sandbox", id))
    }

    /// What a sandbox's commands mount: its live attachments. Read at each
    /// command, so a lease that ended (detach, or another holder since) is
    /// never mounted.
    pub async fn sandbox_mounts(&self, sandbox_id: &str) -> ControlResult<Vec<Mount>> {
        let volumes = self.volumes()?;
        Ok(self
            .store()?
            .holder_attachments(sandbox_id)
            .await?
            .into_iter()
            .map(|a| Mount {
                host: volumes.data_path(&a.volume_id),
                inside: a.mount_path,
                writable: true,
            })
            .collect())
    }

    /// Readies the workspace, resolves the variables and connects its
    /// network to the data services they name.
    async fn boot(&self, row: &SandboxRow) -> ControlResult<BootEnv> {
        let sandboxes = self.sandboxes()?;
        sandboxes.prepare(&row.id).map_err(ControlError::internal)?;
        let booted = self.boot_sandbox(row).await?;
        sandboxes
            .connect_services(&row.id, &booted.endpoints, booted.egress)
            .await
            .map_err(ControlError::internal)?;
        Ok(booted)
    }

    /// Applies a project's changed `network_egress`: to its running
    /// sandboxes at once, and to its runtime instances by replacing them
    /// one at a time, as a promote does (in the background).
    pub async fn apply_network_egress(&self, project: &ProjectRow) {
        let control = self.clone();
        let environments: Vec<String> = project.environments.iter().map(|e| e.id.clone()).collect();
        tokio::spawn(async move {
            let Ok(deployer) = control.deployer() else {
                return;
            };
            for environment in environments {
                deployer.restart_environment(&control, &environment).await;
            }
        });
        let Ok(sandboxes) = self.sandboxes() else {
            return;
        };
        let booted: Vec<(String, BootEnv)> = self
            .boots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, b)| b.project_id.as_deref() == Some(project.id.as_str()))
            .map(|(id, b)| (id.clone(), b.clone()))
            .collect();
        let egress = project.network_egress == "allow";
        for (id, booted) in booted {
            if let Err(e) = sandboxes
                .connect_services(&id, &booted.endpoints, egress)
                .await
            {
                tracing::warn!(sandbox = id, error = %e, "changing a sandbox's egress");
            }
        }
    }

    /// Boots a sandbox and records how that went (running, or error).
    async fn start_sandbox(&self, row: &SandboxRow) -> ControlResult<SandboxRow> {
        let began = std::time::Instant::now();
        let booted = self.boot(row).await;
        let (next, error) = match &booted {
            Ok(_) => ("running", None),
            // Our own faults stay in the log.
            Err(ControlError::Internal(cause)) => {
                tracing::error!(sandbox = row.id, error = %cause, "sandbox boot");
                ("error", Some("internal error".to_string()))
            }
            Err(e) => ("error", Some(e.to_string())),
        };
        let boot_ms = began.elapsed().as_millis() as i32;
        let row = self
            .store()?
            .set_sandbox_state(
                &row.tenant_id,
                &row.id,
                next,
                error.as_deref(),
                Some(boot_ms),
            )
            .await?
            .ok_or_else(|| ControlError::not_found("sandbox", &row.id))?;
        booted?;
        Ok(row)
    }

    /// The environment a new sandbox boots in: `wanted`, else staging when
    /// the project has one, else its default; none without a project.
    async fn sandbox_environment(
        &self,
        project: Option<&ProjectRow>,
        wanted: Option<&str>,
    ) -> ControlResult<Option<EnvironmentRow>> {
        let Some(project) = project else {
            if wanted.is_some() {
                return Err(ControlError::invalid(
                    "environment",
                    "applies to a sandbox of a project; give project_id too",
                ));
            }
            return Ok(None);
        };
        let has_default = project
            .environments
            .iter()
            .any(|e| e.name == DEFAULT_ENVIRONMENT);
        let reference = wanted.or(has_default.then_some(DEFAULT_ENVIRONMENT));
        Ok(Some(
            resolve_environment(self.store()?, project, reference).await?,
        ))
    }

    /// Makes a sandbox in a project environment (staging when the project
    /// has one and none is named) and boots it.
    pub async fn create_sandbox(
        &self,
        caller: &Caller,
        input: CreateSandbox,
    ) -> ControlResult<SandboxRow> {
        if let Err(e) = self.sandboxes()?.available() {
            return Err(ControlError::Unavailable {
                code: "SANDBOXES_UNAVAILABLE",
                message: e.to_string(),
            });
        }
        let store = self.store()?;
        let env = object_entries("env", input.env.as_ref())?;
        let metadata = match input.metadata {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err(ControlError::invalid("metadata", "must be an object")),
        };
        if let Some(name) = &input.name {
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                return Err(ControlError::invalid(
                    "name",
                    "must be 1 to 128 characters without control characters",
                ));
            }
        }
        let project = match input
            .project_id
            .as_deref()
            .or(input.project_slug.as_deref())
        {
            Some(reference) => Some(load_project(store, caller, reference).await?),
            None => None,
        };
        let wanted = input
            .environment
            .as_deref()
            .or(input.environment_id.as_deref())
            .or(input.env_id.as_deref())
            .or_else(|| metadata["environment"].as_str());
        require_reveal(caller, project.as_ref().map(|p| p.id.as_str()))?;
        let environment = self.sandbox_environment(project.as_deref(), wanted).await?;
        let id = IdKind::Sandbox.mint();
        let template = input
            .template_id
            .or(input.template)
            .or(input.image)
            .unwrap_or_else(|| "miosa-sandbox".to_string());
        let made = store
            .create_sandbox(&NewSandbox {
                id: &id,
                tenant_id: &caller.tenant_id,
                project_id: project.as_ref().map(|p| p.id.as_str()),
                environment_id: environment.as_ref().map(|e| e.id.as_str()),
                name: input.name.as_deref(),
                template_id: &template,
                sealed_env: &self.seal_sandbox_env("env", &id, &env)?,
                metadata: &metadata,
                tags: &input.tags.unwrap_or_default(),
            })
            .await;
        let row = match made {
            Ok(row) => row,
            Err(StoreError::Conflict { .. }) => {
                return Err(ControlError::conflict(
                    "SANDBOX_NAME_TAKEN",
                    "a live sandbox already has this name",
                )
                .with_details(json!({ "field": "name" })))
            }
            Err(e) => return Err(e.into()),
        };
        let row = self.start_sandbox(&row).await?;
        tracing::info!(sandbox = row.id, project = ?row.project_id, environment = ?row.environment, "sandbox created");
        Ok(row)
    }

    /// Checks a command and gathers what it runs with: the variables the
    /// sandbox booted with (booting it again after a restart of mds), the
    /// request's own over them, and its volumes.
    pub async fn prepare_exec(
        &self,
        caller: &Caller,
        id: &str,
        input: Exec,
    ) -> ControlResult<PreparedExec> {
        caller.require("projects:write")?;
        let (command, cwd, timeout) = check_exec(&input)?;
        let extra = object_entries("env", input.env.as_ref())?;
        let row = self.sandbox(caller, id).await?;
        require_reveal(caller, row.project_id.as_deref())?;
        match row.state.as_str() {
            "running" => {}
            "destroyed" => {
                return Err(ControlError::conflict(
                    "SANDBOX_DESTROYED",
                    format!("sandbox {id} was destroyed; create a new one"),
                ))
            }
            "creating" => {
                return Err(ControlError::conflict(
                    "SANDBOX_STARTING",
                    "the sandbox is starting",
                ))
            }
            other => {
                return Err(ControlError::conflict(
                    "SANDBOX_NOT_RUNNING",
                    format!("sandbox {id} is {other}; resume it first"),
                ))
            }
        }
        let booted = self
            .boots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned();
        let booted = match booted {
            Some(env) => env,
            None => self.boot(&row).await?,
        };
        let mut env: Vec<(String, String)> = booted
            .vars
            .iter()
            .filter(|(k, _)| !extra.contains_key(k))
            .cloned()
            .collect();
        env.extend(extra);
        Ok(PreparedExec {
            mounts: self.sandbox_mounts(id).await?,
            sandbox_id: row.id,
            env,
            command,
            cwd,
            timeout,
        })
    }

    /// Ends a sandbox's processes, frees its volumes and records `to`
    /// (stopped or paused).
    pub async fn halt_sandbox(
        &self,
        caller: &Caller,
        id: &str,
        to: &str,
    ) -> ControlResult<SandboxRow> {
        let row = self.sandbox(caller, id).await?;
        if row.state == "destroyed" {
            return Err(destroyed(id));
        }
        self.forget_boot(id);
        let sandboxes = self.sandboxes()?;
        sandboxes.kill_all(id);
        sandboxes.disconnect(id);
        let store = self.store()?;
        store.release_holder(id).await?;
        store
            .set_sandbox_state(&caller.tenant_id, id, to, None, None)
            .await?
            .ok_or_else(|| ControlError::not_found("sandbox", id))
    }

    /// Its commands boot it again from now on.
    fn forget_boot(&self, id: &str) {
        self.boots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Boots the sandbox again: variables are resolved anew (a changed
    /// binding or variable reaches it now), with `env` merged into its own
    /// and in `environment` if named.
    pub async fn resume_sandbox(
        &self,
        caller: &Caller,
        id: &str,
        env: Option<&Value>,
        environment: Option<&str>,
    ) -> ControlResult<SandboxRow> {
        let store = self.store()?;
        let row = self.sandbox(caller, id).await?;
        require_reveal(caller, row.project_id.as_deref())?;
        if row.state == "destroyed" {
            return Err(ControlError::conflict(
                "SANDBOX_DESTROYED",
                format!("sandbox {id} was destroyed; create a new one"),
            ));
        }
        let extra = object_entries("env", env)?;
        if !extra.is_empty() {
            let mut own = self.open_sandbox_env(&row.id, &row.sealed_env)?;
            own.extend(extra);
            let sealed = self.seal_sandbox_env("env", id, &own)?;
            store
                .set_sandbox_env(&caller.tenant_id, id, &sealed)
                .await?;
        }
        if let (Some(wanted), Some(project_id)) = (environment, &row.project_id) {
            let project = load_project(store, caller, project_id).await?;
            let env = resolve_environment(store, &project, Some(wanted)).await?;
            store
                .set_sandbox_environment(&caller.tenant_id, id, &env.id)
                .await?;
        }
        self.sandboxes()?.kill_all(id);
        let row = self.sandbox(caller, id).await?;
        self.start_sandbox(&row).await
    }

    /// Removes the sandbox's processes and workspace, and nothing else:
    /// its volumes are free for the next holder, their data stays.
    pub async fn destroy_sandbox(&self, caller: &Caller, id: &str) -> ControlResult<SandboxRow> {
        let row = self.sandbox(caller, id).await?;
        if row.state != "destroyed" {
            self.forget_boot(id);
            self.sandboxes()?
                .remove(id)
                .await
                .map_err(ControlError::internal)?;
            self.store()?.release_holder(id).await?;
        }
        let row = self
            .store()?
            .set_sandbox_state(&caller.tenant_id, id, "destroyed", None, None)
            .await?
            .ok_or_else(|| ControlError::not_found("sandbox", id))?;
        tracing::info!(sandbox = id, "sandbox destroyed");
        Ok(row)
    }

    /// A sandbox's own variables: previews, values too if `reveal`.
    pub fn sandbox_env(&self, row: &SandboxRow, reveal: bool) -> ControlResult<SandboxEnv> {
        let vars = self
            .open_sandbox_env(&row.id, &row.sealed_env)?
            .into_iter()
            .map(|(key, value)| {
                let secret = mds_core::vars::looks_secret(&key);
                SandboxVar {
                    preview: mds_core::vars::preview(&value, secret),
                    key,
                    encrypted: true,
                    source: "sandbox".to_string(),
                    value: reveal.then_some(value),
                }
            })
            .collect();
        Ok(SandboxEnv { vars })
    }

    /// Merges variables into the sandbox's own, for its next boot.
    pub async fn set_sandbox_vars(
        &self,
        caller: &Caller,
        id: &str,
        vars: Vec<(String, String)>,
    ) -> ControlResult<SandboxRow> {
        let row = self.sandbox(caller, id).await?;
        for (key, value) in &vars {
            check_entry("vars", key, value)?;
        }
        may_steer_programs(caller, vars.iter().map(|(k, _)| k.as_str()))?;
        let mut env = self.open_sandbox_env(&row.id, &row.sealed_env)?;
        env.extend(vars);
        self.write_sandbox_env(caller, "vars", id, &env).await?;
        self.sandbox(caller, id).await
    }

    /// Removes one of the sandbox's own variables.
    pub async fn unset_sandbox_var(
        &self,
        caller: &Caller,
        id: &str,
        key: &str,
    ) -> ControlResult<()> {
        let row = self.sandbox(caller, id).await?;
        let mut env = self.open_sandbox_env(&row.id, &row.sealed_env)?;
        if env.remove(key).is_none() {
            return Err(ControlError::not_found("variable", key));
        }
        self.write_sandbox_env(caller, "env", id, &env).await
    }

    async fn write_sandbox_env(
        &self,
        caller: &Caller,
        field: &'static str,
        id: &str,
        env: &BTreeMap<String, String>,
    ) -> ControlResult<()> {
        let sealed = self.seal_sandbox_env(field, id, env)?;
        if !self
            .store()?
            .set_sandbox_env(&caller.tenant_id, id, &sealed)
            .await?
        {
            return Err(destroyed(id));
        }
        Ok(())
    }
}
