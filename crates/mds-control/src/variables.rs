//! The variable store: what a client may set, how it is sealed at rest,
//! and how it is opened again.
//!
//! Every set of variables (shared per environment, a data service's, a
//! deployment's, a sandbox's own) goes through [`check_entry`] for its
//! names and values, and the sets kept as one sealed blob (a sandbox's
//! own) also through [`check_total`]. Each sealed value is bound to its
//! place by its context ([`Context`]), so a sealed value copied to another
//! row, scope or name does not open.

use std::collections::BTreeMap;

use mds_api_types::VariablesInput;
use mds_core::{names, vars};
use mds_store::{VariableRow, VariableScope};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::{Caller, Control, ControlError, ControlResult};

/// The most a sandbox's own variables (names and values) may hold.
pub const MAX_OWN_ENV_BYTES: usize = 64 << 10;

/// The associated data a sealed variable is bound to: where it lives and
/// its name. Changing one of these strings makes every stored value
/// unreadable, so they are defined here once.
pub enum Context<'a> {
    /// A variable of a scope: shared, a data service's or a deployment's.
    Variable(VariableScope<'a>, &'a str),
    /// A sandbox's own variables, sealed together.
    SandboxEnv(&'a str),
    /// A runtime-env variable, bound to its unique key (so an upsert
    /// seals without reading the row's id first).
    RuntimeEnv {
        tenant_id: &'a str,
        scope: &'a str,
        project_id: Option<&'a str>,
        target: &'a str,
        name: &'a str,
    },
}

impl Context<'_> {
    pub fn associated_data(&self) -> String {
        match self {
            Context::Variable(VariableScope::Shared { environment_id }, name) => {
                format!("var:{environment_id}:{name}")
            }
            Context::Variable(
                VariableScope::Service {
                    service_id,
                    environment_id,
                },
                name,
            ) => format!("svcvar:{service_id}:{environment_id}:{name}"),
            Context::Variable(
                VariableScope::Deployment {
                    deployment_id,
                    environment_id,
                },
                name,
            ) => format!("depvar:{deployment_id}:{environment_id}:{name}"),
            Context::SandboxEnv(id) => format!("sandbox:{id}:env"),
            Context::RuntimeEnv {
                tenant_id,
                scope,
                project_id,
                target,
                name,
            } => format!(
                "rtenv:{tenant_id}:{scope}:{}:{target}:{name}",
                project_id.unwrap_or("-")
            ),
        }
    }
}

/// One variable a client asked to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub value: String,
    /// Whether it is a secret; `None` guesses from the name.
    pub secret: Option<bool>,
}

/// A name a shell accepts and a value of at most 64 KiB without NUL.
pub fn check_entry(field: &'static str, name: &str, value: &str) -> ControlResult<()> {
    names::validate_variable_name(field, name)?;
    names::validate_variable_value(field, value)
        .map_err(|e| ControlError::invalid(field, format!("{name}: {}", e.message)))
}

/// A whole set of variables kept together holds at most
/// [`MAX_OWN_ENV_BYTES`] of names and values.
pub fn check_total(field: &'static str, env: &BTreeMap<String, String>) -> ControlResult<()> {
    if env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_OWN_ENV_BYTES {
        return Err(ControlError::invalid(
            field,
            format!("at most {MAX_OWN_ENV_BYTES} bytes of names and values"),
        ));
    }
    Ok(())
}

/// A name that steers how programs start (`LD_PRELOAD`, `BASH_ENV`,
/// `NODE_OPTIONS`...) runs code with the environment's secrets at the next
/// boot: setting one needs `env:reveal`, whatever the variable set.
pub fn may_steer_programs<'a>(
    caller: &Caller,
    mut names: impl Iterator<Item = &'a str>,
) -> ControlResult<()> {
    match names.find(|name| vars::steers_programs(name)) {
        None => Ok(()),
        Some(name) => caller.require("env:reveal").map_err(|e| {
            e.with_details(serde_json::json!({
                "required_scope": "env:reveal",
                "field": "variables",
                "name": name,
                "reason": "this variable changes how programs start; setting it needs env:reveal",
            }))
        }),
    }
}

/// The entries of a `{"variables": ...}` body (a map or a list), checked.
pub fn entries(input: Option<VariablesInput>) -> ControlResult<Vec<Entry>> {
    let input = input.ok_or_else(|| ControlError::missing("variables"))?;
    let entries: Vec<Entry> = match input {
        VariablesInput::Map(map) => map
            .into_iter()
            .map(|(name, value)| Entry {
                name,
                value,
                secret: None,
            })
            .collect(),
        VariablesInput::List(list) => list
            .into_iter()
            .map(|v| Entry {
                name: v.name,
                value: v.value,
                secret: v.is_secret,
            })
            .collect(),
    };
    if entries.is_empty() {
        return Err(ControlError::invalid(
            "variables",
            "must name at least one variable",
        ));
    }
    for entry in &entries {
        check_entry("variables", &entry.name, &entry.value)?;
    }
    Ok(entries)
}

/// Variables given as a JSON object of `NAME: value` (strings, numbers or
/// booleans), checked, the whole set included.
pub fn object_entries(
    field: &'static str,
    raw: Option<&Value>,
) -> ControlResult<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    let Some(raw) = raw.filter(|v| !v.is_null()) else {
        return Ok(env);
    };
    let map = raw
        .as_object()
        .ok_or_else(|| ControlError::invalid(field, "must be an object of NAME: value"))?;
    for (name, value) in map {
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(ControlError::invalid(
                    field,
                    format!("{name}: values are strings"),
                ))
            }
        };
        check_entry(field, name, &value)?;
        env.insert(name.clone(), value);
    }
    check_total(field, &env)?;
    Ok(env)
}

impl Control {
    /// A variable's value, unsealed.
    pub fn open_variable(
        &self,
        scope: VariableScope<'_>,
        row: &VariableRow,
    ) -> ControlResult<Zeroizing<String>> {
        self.master_key
            .open_string(
                &Context::Variable(scope, &row.name).associated_data(),
                &row.sealed_value,
            )
            .map_err(|e| ControlError::internal(format!("variable {}: {e}", row.name)))
    }

    /// Every variable of `scope`, unsealed: (row, value).
    pub async fn open_variables(
        &self,
        scope: VariableScope<'_>,
    ) -> ControlResult<Vec<(VariableRow, Zeroizing<String>)>> {
        let rows = self.store()?.variables(scope).await?;
        rows.into_iter()
            .map(|row| {
                let value = self.open_variable(scope, &row)?;
                Ok((row, value))
            })
            .collect()
    }

    /// Seals and stores entries in `scope`, all or none; see
    /// [`may_steer_programs`].
    pub async fn write_variables(
        &self,
        caller: &Caller,
        scope: VariableScope<'_>,
        entries: Vec<Entry>,
    ) -> ControlResult<()> {
        may_steer_programs(caller, entries.iter().map(|e| e.name.as_str()))?;
        let sealed: Vec<(String, Vec<u8>, bool)> = entries
            .into_iter()
            .map(|entry| {
                let secret = entry
                    .secret
                    .unwrap_or_else(|| vars::looks_secret(&entry.name));
                let sealed = self.master_key.seal(
                    &Context::Variable(scope, &entry.name).associated_data(),
                    entry.value.as_bytes(),
                );
                (entry.name, sealed, secret)
            })
            .collect();
        self.store()?.upsert_variables(scope, &sealed).await?;
        Ok(())
    }

    /// A sandbox's own variables, opened.
    pub fn open_sandbox_env(
        &self,
        sandbox_id: &str,
        sealed: &[u8],
    ) -> ControlResult<BTreeMap<String, String>> {
        let opened = self
            .master_key
            .open(&Context::SandboxEnv(sandbox_id).associated_data(), sealed)
            .map_err(ControlError::internal)?;
        serde_json::from_slice(&opened).map_err(ControlError::internal)
    }

    /// A sandbox's own variables, checked as a whole and sealed.
    pub fn seal_sandbox_env(
        &self,
        field: &'static str,
        sandbox_id: &str,
        env: &BTreeMap<String, String>,
    ) -> ControlResult<Vec<u8>> {
        check_total(field, env)?;
        let json = serde_json::to_vec(env).map_err(ControlError::internal)?;
        Ok(self
            .master_key
            .seal(&Context::SandboxEnv(sandbox_id).associated_data(), &json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_validator_for_names_values_and_sizes() {
        let cases: &[(&str, &str, bool)] = &[
            ("GREETING", "hello", true),
            ("_X", "", true),
            ("1X", "v", false),
            ("A-B", "v", false),
            ("X", "a\0b", false),
            ("X", &"v".repeat(64 << 10), true),
            ("X", &"v".repeat((64 << 10) + 1), false),
        ];
        for (name, value, ok) in cases {
            assert_eq!(
                check_entry("env", name, value).is_ok(),
                *ok,
                "{name}={}",
                value.len()
            );
        }
        let mut env = BTreeMap::new();
        env.insert("A".to_string(), "v".repeat(40 << 10));
        assert!(check_total("env", &env).is_ok());
        env.insert("B".to_string(), "v".repeat(40 << 10));
        assert!(check_total("env", &env).is_err());
    }

    #[test]
    fn objects_take_strings_numbers_and_booleans_only() {
        let raw = serde_json::json!({"A": "x", "B": 2, "C": true});
        let env = object_entries("env", Some(&raw)).expect("valid");
        assert_eq!(env["B"], "2");
        assert_eq!(env["C"], "true");
        for bad in [
            serde_json::json!({"A": {"nested": 1}}),
            serde_json::json!({"A": null}),
            serde_json::json!(["A"]),
            serde_json::json!({"BAD NAME": "x"}),
        ] {
            assert!(object_entries("env", Some(&bad)).is_err(), "{bad}");
        }
        assert!(object_entries("env", None).expect("empty").is_empty());
    }

    #[test]
    fn contexts_stay_what_sealed_values_were_bound_to() {
        let shared = VariableScope::Shared {
            environment_id: "env_1",
        };
        assert_eq!(
            Context::Variable(shared, "X").associated_data(),
            "var:env_1:X"
        );
        let service = VariableScope::Service {
            service_id: "svc_1",
            environment_id: "env_1",
        };
        assert_eq!(
            Context::Variable(service, "X").associated_data(),
            "svcvar:svc_1:env_1:X"
        );
        let deployment = VariableScope::Deployment {
            deployment_id: "dep_1",
            environment_id: "env_1",
        };
        assert_eq!(
            Context::Variable(deployment, "X").associated_data(),
            "depvar:dep_1:env_1:X"
        );
        assert_eq!(
            Context::SandboxEnv("sbx_1").associated_data(),
            "sandbox:sbx_1:env"
        );
        let runtime = Context::RuntimeEnv {
            tenant_id: "ten_1",
            scope: "project",
            project_id: Some("proj_1"),
            target: "all",
            name: "X",
        };
        assert_eq!(
            runtime.associated_data(),
            "rtenv:ten_1:project:proj_1:all:X"
        );
        let tenant = Context::RuntimeEnv {
            tenant_id: "ten_1",
            scope: "tenant",
            project_id: None,
            target: "sandbox",
            name: "X",
        };
        assert_eq!(tenant.associated_data(), "rtenv:ten_1:tenant:-:sandbox:X");
    }
}
