//! `mds backup` (restore points, drills, retention) and `mds restore`.

use clap::{Args, Subcommand};
use mds_api_types::backups::{BackupOverview, RestorePoint, RestoreResult};
use serde_json::json;

use crate::client::{data, segment};
use crate::commands::{confirm_by_name, Ctx};
use crate::output::table;

#[derive(Subcommand)]
pub enum Backup {
    /// Take a restore point of an environment: every service, one moment
    Create {
        #[arg(short, long)]
        project: String,
        #[arg(short, long, default_value = "production")]
        environment: String,
    },
    /// List restore points (id, time, size, services, verification), the
    /// PITR window and what needs attention
    List {
        #[arg(short, long)]
        project: String,
        #[arg(short, long)]
        environment: Option<String>,
    },
    /// Restore a point into scratch resources and compare it with what was
    /// recorded when it was taken (a drill)
    Verify { restore_point: String },
    /// Delete a restore point now, with its files (its bucket chunks may
    /// then be collected)
    Delete { restore_point: String },
    /// Days an environment keeps its restore points ("default" for the
    /// server's)
    Retention {
        #[arg(short, long)]
        project: String,
        #[arg(short, long)]
        environment: String,
        days: String,
    },
}

/// `mds restore`: into a fresh copy, checked, then switched; what it
/// replaced becomes a restore point (printed: restore it to undo).
#[derive(Args)]
pub struct Restore {
    #[arg(short, long)]
    project: String,
    #[arg(short, long)]
    environment: String,
    /// The restore point to restore
    #[arg(long, conflicts_with = "to_time", required_unless_present = "to_time")]
    restore_point: Option<String>,
    /// Postgres to this moment (RFC 3339, like 2026-12-06T10:00:00Z);
    /// other services from the newest restore point at or before it
    #[arg(long)]
    to_time: Option<String>,
    /// Only this service
    #[arg(long)]
    service: Option<String>,
    /// Restore a copy into this environment instead (the source is left
    /// alone)
    #[arg(long)]
    into: Option<String>,
    /// Do not ask
    #[arg(long)]
    yes: bool,
}

fn print_points(points: &[RestorePoint]) {
    table(
        &[
            "ID", "TIME", "ENV", "REASON", "STATE", "SIZE", "SERVICES", "VERIFIED",
        ],
        points
            .iter()
            .map(|p| {
                vec![
                    p.id.clone(),
                    mds_api_types::time::format(&p.created_at),
                    p.environment.clone(),
                    p.reason.clone(),
                    p.state.clone(),
                    format!("{} B", p.size_bytes),
                    p.services
                        .iter()
                        .map(|s| match &s.skipped {
                            Some(_) => format!("{} (skipped)", s.name),
                            None => s.name.clone(),
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    p.verification.state.clone(),
                ]
            })
            .collect(),
    );
}

pub(crate) fn environment_path(project: &str, environment: &str, rest: &str) -> String {
    format!(
        "/projects/{}/environments/{}/{rest}",
        segment(project),
        segment(environment)
    )
}

impl Backup {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Backup::Create {
                project,
                environment,
            } => {
                let answer = ctx.api.post(
                    &environment_path(&project, &environment, "restore-points"),
                    &json!({}),
                )?;
                if !ctx.printed_json(&answer) {
                    print_points(&[data(answer)?]);
                }
            }
            Backup::List {
                project,
                environment,
            } => {
                let query: Vec<(&str, &str)> = environment
                    .as_deref()
                    .map(|e| vec![("environment", e)])
                    .unwrap_or_default();
                let answer = ctx
                    .api
                    .get_query(&format!("/projects/{}/backups", segment(&project)), &query)?;
                if !ctx.printed_json(&answer) {
                    let overview: BackupOverview = data(answer)?;
                    println!("repository: {}", overview.repository.location);
                    if let Some(warning) = &overview.repository.warning {
                        println!("warning: {warning}");
                    }
                    match (overview.pitr.window_start, overview.pitr.window_end) {
                        (Some(start), Some(end)) => println!(
                            "point-in-time window: {} .. {}",
                            mds_api_types::time::format(&start),
                            mds_api_types::time::format(&end)
                        ),
                        _ => println!("point-in-time: {}", overview.pitr.note),
                    }
                    for error in &overview.errors {
                        println!("error: {error}");
                    }
                    print_points(&overview.restore_points);
                }
            }
            Backup::Verify { restore_point } => {
                let answer = ctx.api.post(
                    &format!("/restore-points/{}/verify", segment(&restore_point)),
                    &json!({}),
                )?;
                if !ctx.printed_json(&answer) {
                    let point: RestorePoint = data(answer)?;
                    print_points(std::slice::from_ref(&point));
                    if let Some(detail) = &point.verification.detail {
                        println!("{}", serde_json::to_string_pretty(detail)?);
                    }
                    if point.verification.state != "passed" {
                        anyhow::bail!("the drill of {} failed", point.id);
                    }
                }
            }
            Backup::Delete { restore_point } => {
                let answer = ctx
                    .api
                    .delete_query(&format!("/restore-points/{}", segment(&restore_point)), &[])?;
                if !ctx.printed_json(&answer) {
                    println!("deleted {restore_point}");
                }
            }
            Backup::Retention {
                project,
                environment,
                days,
            } => {
                let days: Option<i32> = match days.as_str() {
                    "default" => None,
                    n => Some(n.parse().map_err(|_| {
                        anyhow::anyhow!("days must be a number of days or \"default\"")
                    })?),
                };
                let answer = ctx.api.put(
                    &environment_path(&project, &environment, "backup-retention"),
                    &json!({ "retention_days": days }),
                )?;
                if !ctx.printed_json(&answer) {
                    println!(
                        "{environment} keeps its restore points {} days",
                        answer["data"]["retention_days"]
                    );
                }
            }
        }
        Ok(())
    }
}

impl Restore {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let target = self.into.as_deref().unwrap_or(&self.environment);
        if !self.yes {
            confirm_by_name(
                target,
                &format!("restore into {target}"),
                &format!(
                    "This replaces the live data of {} in {target} (it becomes a restore point \
                     first, so the restore can be undone)",
                    self.service.as_deref().unwrap_or("every service")
                ),
                "nothing was restored",
            )?;
        }
        let answer = ctx.api.post(
            &environment_path(&self.project, &self.environment, "restores"),
            &json!({
                "restore_point": self.restore_point,
                "to_time": self.to_time,
                "service": self.service,
                "into": self.into,
                "confirm": true,
            }),
        )?;
        if !ctx.printed_json(&answer) {
            let result: RestoreResult = data(answer)?;
            table(
                &["SERVICE", "KIND", "FROM", "ENDED", "CHECKED"],
                result
                    .restored
                    .iter()
                    .map(|r| {
                        vec![
                            r.name.clone(),
                            r.kind.clone(),
                            r.from.clone(),
                            r.terminated.to_string(),
                            r.checked.clone(),
                        ]
                    })
                    .collect(),
            );
            for skipped in &result.not_restored {
                println!("not restored: {}: {}", skipped.name, skipped.reason);
            }
            if let Some(undo) = &result.undo_restore_point {
                println!(
                    "the data it replaced is restore point {undo}; to undo: mds restore -p {} -e {target} --restore-point {undo}",
                    self.project
                );
            }
        }
        Ok(())
    }
}

/// `mds status`: whether the server serves, its engines, and where its
/// backups go (said plainly when they share the data's disk).
pub fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let response = ctx
        .api
        .request_root(reqwest::Method::GET, "/healthz")
        .send()
        .map_err(|e| anyhow::anyhow!("cannot reach mds: {e}"))?;
    let health: mds_api_types::Health = response.json()?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&health)?);
        return Ok(());
    }
    println!("status: {}", health.status);
    for (engine, state) in &health.engines {
        println!("  {engine}: {state}");
    }
    if let Some(backups) = &health.backups {
        println!("backups: {}", backups.repository);
        println!(
            "  point-in-time recovery: {}",
            if backups.pitr {
                "on (WAL archiving)"
            } else {
                "the external server's job"
            }
        );
        if let Some(warning) = &backups.warning {
            println!("  warning: {warning}");
        }
        for problem in &backups.problems {
            println!("  error: {problem}");
        }
        if !backups.problems.is_empty() {
            anyhow::bail!("backups need attention");
        }
    }
    Ok(())
}
