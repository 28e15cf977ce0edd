//! `mds credentials rotate`: new data-service credentials with overlap.

use clap::Subcommand;
use mds_api_types::backups::{RotateRequest, RotationResult, RotationSchedule};
use mds_api_types::Environment;

use crate::backups::environment_path;
use crate::client::{data, segment};
use crate::commands::Ctx;
use crate::output::table;

#[derive(Subcommand)]
pub enum Credentials {
    /// Replace an environment's data-service credentials. The old ones
    /// keep working for the grace period, new boots get the new ones, and
    /// running deployments are restarted one instance at a time
    Rotate {
        #[arg(short, long)]
        project: String,
        #[arg(short, long, default_value = "production", conflicts_with = "all")]
        environment: String,
        /// Every environment of the project
        #[arg(long)]
        all: bool,
        /// Only this data service
        #[arg(long)]
        service: Option<String>,
        /// How long the old credentials keep working (1s to 7d)
        #[arg(long, default_value = "10m")]
        grace: String,
    },
    /// Rotate an environment's credentials on a schedule: once they are
    /// older than --rotate-every (1h to 365d); --off ends the schedule
    Schedule {
        #[arg(short, long)]
        project: String,
        #[arg(short, long, default_value = "production")]
        environment: String,
        #[arg(long, required_unless_present = "off", conflicts_with = "off")]
        rotate_every: Option<String>,
        #[arg(long)]
        off: bool,
        /// The grace period of each scheduled rotation
        #[arg(long, default_value = "10m")]
        grace: String,
    },
}

impl Credentials {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let (project, environment, all, service, grace) = match self {
            Credentials::Rotate {
                project,
                environment,
                all,
                service,
                grace,
            } => (project, environment, all, service, grace),
            Credentials::Schedule {
                project,
                environment,
                rotate_every,
                off: _,
                grace,
            } => return schedule(ctx, &project, &environment, rotate_every, grace),
        };
        let environments = match all {
            false => vec![environment],
            true => data::<Vec<Environment>>(
                ctx.api
                    .get(&format!("/projects/{}/environments", segment(&project)))?,
            )?
            .into_iter()
            .map(|e| e.name)
            .collect(),
        };
        let mut results = Vec::new();
        for environment in &environments {
            let answer = ctx.api.post(
                &environment_path(&project, environment, "credentials/rotate"),
                &RotateRequest {
                    service: service.clone(),
                    grace: Some(grace.clone()),
                },
            );
            match answer {
                Ok(answer) => results.push(answer),
                // --all: an environment with nothing to rotate is said, not fatal.
                Err(e) if all => eprintln!("{environment}: {e}"),
                Err(e) => return Err(e),
            }
        }
        if ctx.printed_json(&serde_json::json!({ "data": results })) {
            return Ok(());
        }
        for answer in results {
            let result: RotationResult = data(answer)?;
            println!(
                "{}: rotated; the old credentials work until the grace period ends",
                result.environment
            );
            table(
                &["service", "kind", "user", "old ones valid until"],
                result
                    .rotated
                    .iter()
                    .map(|r| {
                        vec![
                            r.name.clone(),
                            r.kind.clone(),
                            r.user.clone(),
                            mds_api_types::time::format(&r.previous_valid_until),
                        ]
                    })
                    .collect(),
            );
            for skipped in &result.not_rotated {
                println!("  not rotated: {}: {}", skipped.name, skipped.reason);
            }
            println!(
                "  {} deployment(s) restarted one instance at a time",
                result.restarted
            );
        }
        Ok(())
    }
}

fn schedule(
    ctx: &Ctx,
    project: &str,
    environment: &str,
    rotate_every: Option<String>,
    grace: String,
) -> anyhow::Result<()> {
    let answer = ctx.api.put(
        &environment_path(project, environment, "credentials/schedule"),
        &RotationSchedule {
            rotate_every: rotate_every.clone(),
            grace: rotate_every.is_some().then_some(grace),
        },
    )?;
    if ctx.printed_json(&answer) {
        return Ok(());
    }
    let env: Environment = data(answer)?;
    match (env.rotate_every_secs, env.rotate_grace_secs) {
        (Some(every), grace) => println!(
            "{}: credentials rotate once they are {} old, the replaced ones valid for {}",
            env.name,
            crate::commands::span_words(every),
            crate::commands::span_words(grace.unwrap_or_default())
        ),
        (None, _) => println!("{}: no scheduled rotation", env.name),
    }
    Ok(())
}
