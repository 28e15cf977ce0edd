//! Runtime env (`/runtime-env`): variables of the whole tenant, of its
//! workspace, or of one project, for sandboxes, runtime instances or both.
//!
//! They are one layer of the boot env ([`mds_core::env::Layer::RuntimeEnv`]),
//! above the data-service bindings and below the environment's shared
//! variables: defaults that a project's environment can override. Within
//! the layer, tenant < workspace < project, and at one scope a variable
//! for a named target wins over one for `all`. A disabled variable is kept
//! and not injected. Values are sealed, bound to the variable's key.

use mds_api_types::runtime_env::SetRuntimeEnv;
use mds_core::env::{Candidate, Layer};
use mds_core::ids::IdKind;
use mds_core::tenancy::DEFAULT_WORKSPACE_ID;
use mds_core::vars;
use mds_store::{NewRuntimeEnv, RuntimeEnvFilter, RuntimeEnvRow};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::projects::load_project;
use crate::variables::{check_entry, may_steer_programs, Context};
use crate::{Caller, Control, ControlError, ControlResult};

/// The most a variable's metadata may hold, as JSON.
const MAX_METADATA_BYTES: usize = 16 << 10;

/// Whose defaults. There is one workspace per server, so `tenant` and
/// `workspace` both reach every project; `workspace` wins over `tenant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Tenant,
    Workspace,
    Project,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Tenant => "tenant",
            Scope::Workspace => "workspace",
            Scope::Project => "project",
        }
    }

    pub fn parse(s: &str) -> ControlResult<Self> {
        match s {
            "tenant" => Ok(Scope::Tenant),
            "workspace" => Ok(Scope::Workspace),
            "project" => Ok(Scope::Project),
            "sandbox" | "deployment" => Err(ControlError::invalid(
                "scope",
                format!(
                    "scope {s:?} is not a runtime-env scope here: use tenant, workspace or \
                     project; a single sandbox's variables are PUT /sandboxes/{{id}}/env, a \
                     deployment's are POST /deployments/{{id}}/env"
                ),
            )),
            _ => Err(ControlError::invalid(
                "scope",
                format!("must be one of tenant, workspace, project; got {s:?}"),
            )),
        }
    }
}

/// Which processes get a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    All,
    /// Sandboxes (the SDK's `computer` too).
    Sandbox,
    /// Runtime instances of deployments (the SDK's `deployment` too).
    Runtime,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::All => "all",
            Target::Sandbox => "sandbox",
            Target::Runtime => "runtime",
        }
    }

    pub fn parse(s: &str) -> ControlResult<Self> {
        match s {
            "all" => Ok(Target::All),
            "sandbox" | "computer" => Ok(Target::Sandbox),
            "runtime" | "deployment" => Ok(Target::Runtime),
            "agent" => Err(ControlError::invalid(
                "target",
                "this server runs no agent runtimes; use all, sandbox or runtime",
            )),
            _ => Err(ControlError::invalid(
                "target",
                format!(
                    "must be one of all, sandbox (or computer), runtime (or deployment); got {s:?}"
                ),
            )),
        }
    }
}

/// The filters of `GET /runtime-env`, as the client sent them.
#[derive(Default)]
pub struct ListQuery<'a> {
    pub scope: Option<&'a str>,
    pub project: Option<&'a str>,
    pub target: Option<&'a str>,
}

fn metadata_of(raw: Option<Value>) -> ControlResult<Value> {
    let metadata = match raw {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(ControlError::invalid("metadata", "must be an object")),
    };
    if metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(ControlError::invalid(
            "metadata",
            format!("at most {MAX_METADATA_BYTES} bytes of JSON"),
        ));
    }
    Ok(metadata)
}

impl Control {
    /// Sets (inserts or replaces) one variable; returns its row.
    pub async fn set_runtime_env(
        &self,
        caller: &Caller,
        body: SetRuntimeEnv,
    ) -> ControlResult<RuntimeEnvRow> {
        let name = body.name.ok_or_else(|| ControlError::missing("name"))?;
        let value = body.value.ok_or_else(|| ControlError::missing("value"))?;
        mds_core::names::validate_variable_name("name", &name)?;
        check_entry("value", &name, &value)?;
        let target = Target::parse(body.target.as_deref().unwrap_or("all"))?;
        let scope = match body.scope.as_deref() {
            Some(s) => Scope::parse(s)?,
            None if body.project_id.is_some() => Scope::Project,
            None => Scope::Tenant,
        };
        let metadata = metadata_of(body.metadata)?;
        let store = self.store()?;
        let (project_id, workspace_id) = match (scope, body.project_id.as_deref()) {
            (Scope::Project, Some(reference)) => {
                let project = load_project(store, caller, reference).await?;
                (Some(project.id.clone()), project.workspace_id.clone())
            }
            (Scope::Project, None) => return Err(ControlError::missing("project_id")),
            (_, Some(_)) => {
                return Err(ControlError::invalid(
                    "project_id",
                    format!("only scope project names a project, not {}", scope.as_str()),
                ))
            }
            (_, None) => (
                None,
                body.workspace_id
                    .filter(|w| !w.is_empty())
                    .unwrap_or_else(|| DEFAULT_WORKSPACE_ID.to_string()),
            ),
        };
        if workspace_id.len() > 255 {
            return Err(ControlError::invalid("workspace_id", "at most 255 bytes"));
        }
        may_steer_programs(caller, std::iter::once(name.as_str()))?;
        let is_secret = metadata["is_secret"]
            .as_bool()
            .unwrap_or_else(|| vars::looks_secret(&name));
        let ad = Context::RuntimeEnv {
            tenant_id: &caller.tenant_id,
            scope: scope.as_str(),
            project_id: project_id.as_deref(),
            target: target.as_str(),
            name: &name,
        }
        .associated_data();
        let sealed = self.master_key.seal(&ad, value.as_bytes());
        let id = IdKind::RuntimeEnv.mint();
        Ok(store
            .upsert_runtime_env(&NewRuntimeEnv {
                id: &id,
                tenant_id: &caller.tenant_id,
                scope: scope.as_str(),
                workspace_id: &workspace_id,
                project_id: project_id.as_deref(),
                target: target.as_str(),
                name: &name,
                sealed_value: &sealed,
                is_secret,
                enabled: body.enabled.unwrap_or(true),
                metadata: &metadata,
            })
            .await?)
    }

    /// The caller's variables matching the filters, broad scopes first.
    pub async fn list_runtime_env(
        &self,
        caller: &Caller,
        query: ListQuery<'_>,
    ) -> ControlResult<Vec<RuntimeEnvRow>> {
        let scope = query.scope.map(Scope::parse).transpose()?;
        let target = query.target.map(Target::parse).transpose()?;
        let store = self.store()?;
        let project_id = match query.project.filter(|p| !p.is_empty()) {
            Some(reference) => Some(load_project(store, caller, reference).await?.id.clone()),
            None => None,
        };
        let filter = RuntimeEnvFilter {
            scope: scope.map(Scope::as_str),
            project_id: project_id.as_deref(),
            target: target.map(Target::as_str),
        };
        Ok(store.runtime_env_list(&caller.tenant_id, &filter).await?)
    }

    /// One of the caller's variables by id.
    pub async fn runtime_env(&self, caller: &Caller, id: &str) -> ControlResult<RuntimeEnvRow> {
        self.store()?
            .runtime_env(&caller.tenant_id, id)
            .await?
            .ok_or_else(|| ControlError::not_found("runtime env variable", id))
    }

    pub async fn delete_runtime_env(&self, caller: &Caller, id: &str) -> ControlResult<()> {
        if !self
            .store()?
            .delete_runtime_env(&caller.tenant_id, id)
            .await?
        {
            return Err(ControlError::not_found("runtime env variable", id));
        }
        Ok(())
    }

    /// A variable's value, unsealed.
    pub fn open_runtime_env(&self, row: &RuntimeEnvRow) -> ControlResult<Zeroizing<String>> {
        let ad = Context::RuntimeEnv {
            tenant_id: &row.tenant_id,
            scope: &row.scope,
            project_id: row.project_id.as_deref(),
            target: &row.target,
            name: &row.name,
        }
        .associated_data();
        self.master_key
            .open_string(&ad, &row.sealed_value)
            .map_err(|e| ControlError::internal(format!("runtime env {}: {e}", row.id)))
    }

    /// The runtime-env layer of a boot: the enabled variables of the
    /// tenant, its workspace and `project_id` for `target` (`All`: only
    /// those meant for every process).
    pub(crate) async fn runtime_env_layer(
        &self,
        tenant_id: &str,
        project_id: Option<&str>,
        target: Target,
        candidates: &mut Vec<Candidate>,
    ) -> ControlResult<()> {
        let rows = self
            .store()?
            .runtime_env_for_boot(tenant_id, project_id, target.as_str())
            .await?;
        for row in rows {
            let value = self.open_runtime_env(&row)?;
            candidates.push(Candidate::new(
                Layer::RuntimeEnv,
                &row.scope,
                &row.name,
                &value,
                row.is_secret,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_targets_take_the_sdk_words_and_refuse_the_rest() {
        for (word, scope) in [
            ("tenant", Scope::Tenant),
            ("workspace", Scope::Workspace),
            ("project", Scope::Project),
        ] {
            assert_eq!(Scope::parse(word).expect(word), scope);
        }
        for bad in ["sandbox", "deployment", "", "Project"] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
        for (word, target) in [
            ("all", Target::All),
            ("sandbox", Target::Sandbox),
            ("computer", Target::Sandbox),
            ("runtime", Target::Runtime),
            ("deployment", Target::Runtime),
        ] {
            assert_eq!(Target::parse(word).expect(word), target);
        }
        for bad in ["agent", "", "ALL"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_is_an_object_of_bounded_size() {
        assert_eq!(metadata_of(None).expect("empty"), serde_json::json!({}));
        assert!(metadata_of(Some(serde_json::json!([1]))).is_err());
        let big = serde_json::json!({ "x": "v".repeat(MAX_METADATA_BYTES) });
        assert!(metadata_of(Some(big)).is_err());
    }
}
