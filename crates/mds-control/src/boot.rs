//! The one boot-env assembler: what a process gets when it starts, for
//! every kind of process ([`Target`]). `GET /env`, sandbox boots and
//! runtime-instance boots all call [`Control::boot_env`], so they cannot
//! disagree.
//!
//! Precedence, lowest first (the merge is `mds_core::env::resolve_env`):
//!
//! | layer | what | targets |
//! |---|---|---|
//! | binding | the environment's running bindings (`DATABASE_URL`, `REDIS_URL`, ...) | all with a project |
//! | runtime_env | `/runtime-env`: the tenant's, the workspace's, then the project's; `target` `all`, plus `sandbox` or `runtime` for those | all (`GET /env`: `all` only; a sandbox of no project: tenant and workspace only) |
//! | shared | the environment's shared variables | all with a project |
//! | service | a data service's own variables (`GET /env?service=`), or the deployment's variables in the environment | environment, instance |
//! | run | a sandbox's own variables | sandbox |
//! | platform | `MIOSA_PROJECT_ID`, `MIOSA_ENVIRONMENT`, `MIOSA_SANDBOX_ID`, `MIOSA_DEPLOYMENT_ID`, `MIOSA_VERSION_ID`, `MIOSA_INSTANCE_ID`, `PORT` | as they apply |
//!
//! The platform layer is on top: a variable can override what a binding
//! injects, never the identity of the process or the port its router
//! sends to.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use mds_core::env::{resolve_env, Candidate, Layer, Resolved};
use mds_core::kinds::ServiceKind;
use mds_store::{
    BindingRow, DataServiceRow, EnvironmentRow, ProjectRow, SandboxRow, VariableScope,
};

use crate::projects::resolve_environment;
use crate::{
    is_running, references, runtime_env, BootEnv, Booted, Control, ControlError, ControlResult,
};

/// The project and environment a process runs in.
#[derive(Clone, Copy)]
pub struct Place<'a> {
    pub project: &'a ProjectRow,
    pub env: &'a EnvironmentRow,
}

/// Which process is booting.
pub enum Target<'a> {
    /// Any process of the environment (`GET /env`, `mds run`), optionally
    /// booting as one of its data services.
    Environment { service: Option<&'a DataServiceRow> },
    /// A sandbox, with its own variables.
    Sandbox {
        id: &'a str,
        tenant_id: &'a str,
        own: &'a BTreeMap<String, String>,
    },
    /// A runtime instance of a deployment version, listening on `port`.
    Instance {
        deployment_id: &'a str,
        version_id: &'a str,
        instance_id: &'a str,
        port: u16,
    },
}

/// A boot's variables, each with its provenance, the bindings of the
/// environment that are not running yet (left out), and the host loopback
/// ports its bindings' variables name (what its network reaches).
pub struct Assembled {
    pub variables: Vec<Resolved>,
    pub pending: Vec<BindingRow>,
    pub endpoints: Vec<u16>,
}

impl Assembled {
    /// (name, value) pairs, sorted by name: what a process is given.
    pub fn pairs(self) -> Vec<(String, String)> {
        self.variables
            .into_iter()
            .map(|r| (r.winner.name, r.winner.value))
            .collect()
    }
}

fn platform(name: &str, value: &str) -> Candidate {
    Candidate::new(Layer::Platform, "mds", name, value, false)
}

impl Control {
    /// What `target` gets at boot in `place` (`None`: a sandbox of no
    /// project).
    pub async fn boot_env(
        &self,
        place: Option<Place<'_>>,
        target: Target<'_>,
    ) -> ControlResult<Assembled> {
        let mut candidates = Vec::new();
        let mut pending = Vec::new();
        let mut endpoints = Vec::new();
        let runtime_target = match target {
            Target::Environment { .. } => runtime_env::Target::All,
            Target::Sandbox { .. } => runtime_env::Target::Sandbox,
            Target::Instance { .. } => runtime_env::Target::Runtime,
        };
        let tenant = match (place, &target) {
            (Some(place), _) => Some(place.project.tenant_id.as_str()),
            (None, Target::Sandbox { tenant_id, .. }) => Some(*tenant_id),
            (None, _) => None,
        };
        if let Some(tenant) = tenant {
            let project_id = place.map(|p| p.project.id.as_str());
            self.runtime_env_layer(tenant, project_id, runtime_target, &mut candidates)
                .await?;
        }
        if let Some(place) = place {
            crate::previews::data::check_ready(place.env)?;
            pending = self.environment_layers(place, &mut candidates).await?;
            // Only what mds itself injects opens a way out of the
            // namespace: a user's variable naming another port does not.
            endpoints = candidates
                .iter()
                .filter(|c| c.layer == Layer::Binding)
                .flat_map(|c| mds_core::net::loopback_ports(&c.value))
                .collect();
            endpoints.sort_unstable();
            endpoints.dedup();
            candidates.push(platform("MIOSA_PROJECT_ID", &place.project.id));
            candidates.push(platform("MIOSA_ENVIRONMENT", &place.env.name));
        }
        match target {
            Target::Environment { service: None } => {}
            Target::Environment {
                service: Some(service),
            } => {
                if let Some(place) = place {
                    for (name, value, secret) in
                        references::service_layer(self, place.project, service, place.env).await?
                    {
                        candidates.push(Candidate::new(
                            Layer::Service,
                            &service.name,
                            &name,
                            &value,
                            secret,
                        ));
                    }
                }
            }
            Target::Sandbox { id, own, .. } => {
                for (name, value) in own {
                    candidates.push(Candidate::new(Layer::Run, "sandbox", name, value, false));
                }
                candidates.push(platform("MIOSA_SANDBOX_ID", id));
            }
            Target::Instance {
                deployment_id,
                version_id,
                instance_id,
                port,
            } => {
                if let Some(place) = place {
                    let scope = VariableScope::Deployment {
                        deployment_id,
                        environment_id: &place.env.id,
                    };
                    let own: Vec<_> = self
                        .open_variables(scope)
                        .await?
                        .into_iter()
                        .map(|(row, value)| (row.name, value.to_string(), row.is_secret))
                        .collect();
                    // An app service's variables hold references, resolved
                    // here; a plain deployment's are taken as written.
                    let is_service = self
                        .store()?
                        .deployment(&place.project.tenant_id, deployment_id)
                        .await?
                        .is_some_and(|d| !d.metadata["service"].is_null());
                    let own = match is_service {
                        true => {
                            references::resolve_all(self, place.project, place.env, own).await?
                        }
                        false => own,
                    };
                    for (name, value, secret) in own {
                        candidates.push(Candidate::new(
                            Layer::Service,
                            "deployment",
                            &name,
                            &value,
                            secret,
                        ));
                    }
                }
                candidates.push(platform("MIOSA_DEPLOYMENT_ID", deployment_id));
                candidates.push(platform("MIOSA_VERSION_ID", version_id));
                candidates.push(platform("MIOSA_INSTANCE_ID", instance_id));
                candidates.push(platform("PORT", &port.to_string()));
            }
        }
        Ok(Assembled {
            variables: resolve_env(candidates),
            pending,
            endpoints,
        })
    }

    /// The layers every process of an environment shares: its running
    /// bindings and its shared variables. Returns the bindings not running
    /// yet.
    async fn environment_layers(
        &self,
        place: Place<'_>,
        candidates: &mut Vec<Candidate>,
    ) -> ControlResult<Vec<BindingRow>> {
        let store = self.store()?;
        let reconciler = self.reconciler()?;
        let mut pending = Vec::new();
        for (service, binding) in store.environment_bindings(&place.env.id).await? {
            if !is_running(&binding) {
                pending.push(binding);
                continue;
            }
            // `explain` says which URL goes through the pooler.
            let pooled_origin = format!("{}, {}", service.name, reconciler.pool_note(&binding));
            for (name, value, secret) in reconciler.binding_variables(&service, &binding)? {
                let origin = match service.kind == ServiceKind::Postgres.as_str()
                    && name.ends_with("DATABASE_URL")
                {
                    true => &pooled_origin,
                    false => &service.name,
                };
                candidates.push(Candidate::new(
                    Layer::Binding,
                    origin,
                    &name,
                    &value,
                    secret,
                ));
            }
        }
        let shared = VariableScope::Shared {
            environment_id: &place.env.id,
        };
        for (row, value) in self.open_variables(shared).await? {
            candidates.push(Candidate::new(
                Layer::Shared,
                "shared",
                &row.name,
                &value,
                row.is_secret,
            ));
        }
        Ok(pending)
    }
}

impl Control {
    /// Resolves what a sandbox's processes get, and keeps it until the
    /// sandbox's next boot.
    #[tracing::instrument(skip_all, fields(sandbox = %row.id))]
    pub async fn boot_sandbox(&self, row: &SandboxRow) -> ControlResult<BootEnv> {
        let own = self.open_sandbox_env(&row.id, &row.sealed_env)?;
        let target = Target::Sandbox {
            id: &row.id,
            tenant_id: &row.tenant_id,
            own: &own,
        };
        let mut egress = true;
        let assembled = match (&row.project_id, &row.environment_id) {
            (Some(project_id), Some(environment_id)) => {
                let store = self.store()?;
                let project = store
                    .project(&row.tenant_id, project_id)
                    .await?
                    .ok_or_else(|| ControlError::not_found("project", project_id))?;
                let env = resolve_environment(store, &project, Some(environment_id)).await?;
                egress = project.network_egress == "allow";
                let place = Place {
                    project: &project,
                    env: &env,
                };
                self.boot_env(Some(place), target).await?
            }
            _ => self.boot_env(None, target).await?,
        };
        let endpoints = assembled.endpoints.clone();
        let env: BootEnv = Arc::new(Booted {
            vars: assembled.pairs(),
            endpoints,
            egress,
            project_id: row.project_id.clone(),
        });
        self.boots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(row.id.clone(), env.clone());
        Ok(env)
    }
}
