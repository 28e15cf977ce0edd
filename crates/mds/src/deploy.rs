//! `mds deploy`: publish a sandbox's workspace as a deployment's next
//! version, list versions, promote one per environment, roll back, and
//! look at the runtime instances and their logs. Deployments are named by
//! id or by name; versions by id or by number.

use anyhow::Context;
use clap::Subcommand;
use mds_api_types::deployments::{
    Deployment, DeploymentLogs, Instance, InstanceLogs, Published, Version,
};
use mds_api_types::time;
use serde_json::json;

use crate::client::{data, segment};
use crate::commands::Ctx;
use crate::output::table;

#[derive(Subcommand)]
pub enum Deploy {
    /// Publish a sandbox's workspace as the next version (creating the
    /// deployment if there is none by that name), and promote it
    Publish {
        /// Deployment (id or name)
        deployment: String,
        /// The sandbox whose /workspace is published
        #[arg(short, long)]
        sandbox: String,
        /// Environment to promote to [default: production]
        #[arg(short, long)]
        environment: Option<String>,
        /// Publish only; promote later with `mds deploy promote`
        #[arg(long)]
        no_promote: bool,
        /// The directory of the workspace to publish [default: all of it]
        #[arg(long)]
        output_path: Option<String>,
        /// Makes the version dynamic: the command that serves on $PORT
        #[arg(long)]
        run_command: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        /// Must answer 2xx before the version gets traffic [default: /]
        #[arg(long)]
        health_check_path: Option<String>,
    },
    /// List a deployment's versions, newest first
    Versions { deployment: String },
    /// Serve a version in an environment (its instance must pass its
    /// health check first; the old one keeps serving until then)
    Promote {
        deployment: String,
        /// Version (id or number)
        version: String,
        #[arg(short, long)]
        environment: Option<String>,
    },
    /// Go back to the previous version (or to --to); data is untouched
    Rollback {
        deployment: String,
        /// Version (id or number) [default: the one before the current]
        #[arg(long)]
        to: Option<String>,
        #[arg(short, long)]
        environment: Option<String>,
    },
    /// List a deployment's runtime instances
    Instances { deployment: String },
    /// Print the recent output of a deployment's instances
    Logs {
        deployment: String,
        /// Only this instance
        #[arg(long)]
        instance: Option<String>,
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        #[arg(short, long)]
        environment: Option<String>,
    },
}

/// An optional value, or `-`.
fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The deployment's id, from an id or a name.
fn resolve(ctx: &Ctx, reference: &str) -> anyhow::Result<String> {
    let answer = ctx
        .api
        .get(&format!("/deployments/{}", segment(reference)))?;
    let deployment: Deployment = data(answer)?;
    Ok(deployment.id)
}

/// A version's id, from an id or a number.
fn version_id(ctx: &Ctx, deployment: &str, reference: &str) -> anyhow::Result<String> {
    let Ok(number) = reference.trim_start_matches('v').parse::<i32>() else {
        return Ok(reference.to_string());
    };
    let answer = ctx
        .api
        .get(&format!("/deployments/{}/versions", segment(deployment)))?;
    let versions: Vec<Version> = data(answer)?;
    versions
        .into_iter()
        .find(|v| v.version_number == number)
        .map(|v| v.id)
        .with_context(|| format!("{deployment} has no version {number}"))
}

fn print_deployment(d: &Deployment) {
    table(
        &["ENVIRONMENT", "ACTIVE VERSION", "URL"],
        d.environments
            .iter()
            .map(|(name, e)| vec![name.clone(), e.active_version_id.clone(), e.url.clone()])
            .collect(),
    );
}

fn print_versions(versions: &[Version]) {
    table(
        &["VERSION", "ID", "KIND", "STATE", "SHA256", "CREATED"],
        versions
            .iter()
            .map(|v| {
                vec![
                    v.version_number.to_string(),
                    v.id.clone(),
                    v.kind.clone(),
                    v.state.clone(),
                    or_dash(v.artifact_sha256.as_deref())
                        .chars()
                        .take(12)
                        .collect(),
                    time::format(&v.created_at),
                ]
            })
            .collect(),
    );
}

fn print_instances(instances: &[Instance]) {
    table(
        &[
            "ID",
            "ENVIRONMENT",
            "VERSION",
            "STATE",
            "PORT",
            "RESTARTS",
            "ERROR",
        ],
        instances
            .iter()
            .map(|i| {
                vec![
                    i.id.clone(),
                    i.environment.clone(),
                    i.version_id.clone(),
                    i.state.clone(),
                    or_dash(i.port),
                    i.restart_count.to_string(),
                    or_dash(i.error_message.as_deref()),
                ]
            })
            .collect(),
    );
}

impl Deploy {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Deploy::Publish {
                deployment,
                sandbox,
                environment,
                no_promote,
                output_path,
                run_command,
                port,
                health_check_path,
            } => {
                let (id, name) = if deployment.starts_with("dep_") {
                    (Some(deployment), None)
                } else {
                    (None, Some(deployment))
                };
                let answer = ctx.api.post(
                    &format!("/sandboxes/{}/deploy", segment(&sandbox)),
                    &json!({
                        "deployment_id": id,
                        "name": name,
                        "environment": environment,
                        "promote": !no_promote,
                        "output_path": output_path,
                        "run_command": run_command,
                        "port": port,
                        "health_check_path": health_check_path,
                    }),
                )?;
                if !ctx.printed_json(&answer) {
                    let published: Published = data(answer)?;
                    let v = &published.version;
                    println!(
                        "published {} version {} ({}, {} files, sha256:{})",
                        published.deployment.slug,
                        v.version_number,
                        v.kind,
                        or_dash(v.files()),
                        or_dash(v.artifact_sha256.as_deref()),
                    );
                    if published.promoted {
                        println!("serving at {}", published.url);
                    }
                }
            }
            Deploy::Versions { deployment } => {
                let id = resolve(ctx, &deployment)?;
                let answer = ctx
                    .api
                    .get(&format!("/deployments/{}/versions", segment(&id)))?;
                if !ctx.printed_json(&answer) {
                    print_versions(&data::<Vec<Version>>(answer)?);
                }
            }
            Deploy::Promote {
                deployment,
                version,
                environment,
            } => {
                let id = resolve(ctx, &deployment)?;
                let version = version_id(ctx, &id, &version)?;
                let answer = ctx.api.post(
                    &format!(
                        "/deployments/{}/versions/{}/promote",
                        segment(&id),
                        segment(&version)
                    ),
                    &json!({ "environment": environment }),
                )?;
                if !ctx.printed_json(&answer) {
                    print_deployment(&data(answer)?);
                }
            }
            Deploy::Rollback {
                deployment,
                to,
                environment,
            } => {
                let id = resolve(ctx, &deployment)?;
                let version = to.map(|v| version_id(ctx, &id, &v)).transpose()?;
                let answer = ctx.api.post(
                    &format!("/deployments/{}/rollback", segment(&id)),
                    &json!({ "version_id": version, "environment": environment }),
                )?;
                if !ctx.printed_json(&answer) {
                    print_deployment(&data(answer)?);
                }
            }
            Deploy::Instances { deployment } => {
                let id = resolve(ctx, &deployment)?;
                let answer = ctx
                    .api
                    .get(&format!("/deployments/{}/runtime-instances", segment(&id)))?;
                if !ctx.printed_json(&answer) {
                    print_instances(&data::<Vec<Instance>>(answer)?);
                }
            }
            Deploy::Logs {
                deployment,
                instance,
                lines,
                environment,
            } => {
                let id = resolve(ctx, &deployment)?;
                let lines = lines.to_string();
                let mut query = vec![("lines", lines.as_str())];
                if let Some(e) = &environment {
                    query.push(("environment", e.as_str()));
                }
                let path = match &instance {
                    Some(i) => format!(
                        "/deployments/{}/runtime-instances/{}/logs",
                        segment(&id),
                        segment(i)
                    ),
                    None => format!("/deployments/{}/logs", segment(&id)),
                };
                let answer = ctx.api.get_query(&path, &query)?;
                if !ctx.printed_json(&answer) {
                    let lines = if instance.is_some() {
                        data::<InstanceLogs>(answer)?.lines
                    } else {
                        data::<DeploymentLogs>(answer)?.lines
                    };
                    for line in lines {
                        println!("{line}");
                    }
                }
            }
        }
        Ok(())
    }
}
