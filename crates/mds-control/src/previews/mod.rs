//! Preview environments (issue 18): made with data ([`data`], with
//! [`masks`]) and with a time to live. A preview created with a `ttl` has
//! `expires_at`; `extend` pushes it out; once it has passed, the expiry
//! sweep takes a restore point of the environment's data, then purges the
//! environment as a delete with `purge` would, and records
//! `environment.expire` in the audit log. Production and staging never
//! expire.

pub mod data;
pub mod masks;

use std::time::Duration;

use chrono::{DateTime, Utc};
use mds_store::{EnvironmentRow, ProjectRow};

use crate::backups::points::Reason;
use crate::{Control, ControlError, ControlResult};

/// The shortest and longest time to live.
pub const MIN_TTL: Duration = Duration::from_secs(3600);
pub const MAX_TTL: Duration = Duration::from_secs(90 * 86400);

/// A client's `ttl` (`7d`, `12h`, seconds) for an environment of `kind`:
/// from 1 h to 90 d, and never on production or staging.
pub fn check_ttl(kind: &str, raw: &str) -> ControlResult<Duration> {
    if matches!(kind, "production" | "staging") {
        return Err(ControlError::invalid(
            "ttl",
            format!("a {kind} environment cannot expire; only previews and custom ones take a ttl"),
        ));
    }
    let ttl = mds_core::spans::parse_span(raw).map_err(|e| ControlError::invalid("ttl", e))?;
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(ControlError::invalid(
            "ttl",
            format!("{raw:?} is out of range: from 1h to 90d"),
        ));
    }
    Ok(ttl)
}

/// When an environment given `ttl` now expires.
pub fn expiry_after(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::zero())
}

/// Pushes an environment's expiry out by `raw` (from its current expiry,
/// or from now if that has passed); at most 90 days from now.
pub async fn extend(
    control: &Control,
    env: &EnvironmentRow,
    raw: &str,
) -> ControlResult<EnvironmentRow> {
    let ttl = check_ttl(&env.kind, raw)?;
    let Some(current) = env.expires_at else {
        return Err(ControlError::invalid(
            "ttl",
            format!(
                "environment {:?} has no ttl to extend; it does not expire",
                env.name
            ),
        ));
    };
    let from = current.max(Utc::now());
    let until = from + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::zero());
    if until > expiry_after(MAX_TTL) {
        return Err(ControlError::invalid(
            "ttl",
            format!(
                "that would keep {:?} until {}, more than 90 days from now",
                env.name,
                until.to_rfc3339()
            ),
        ));
    }
    control
        .store()?
        .set_environment_expiry(&env.id, Some(until))
        .await?
        .ok_or_else(|| ControlError::not_found("environment", &env.name))
}

/// Deletes an environment of `project`: with `purge`, its bindings' data
/// first (refused without it when there is any), kept in a restore point
/// taken just before; its deployments stop. Returns that point.
pub async fn delete_environment(
    control: &Control,
    project: &ProjectRow,
    env: &EnvironmentRow,
    purge: bool,
) -> ControlResult<Option<String>> {
    delete_keeping(control, project, env, purge, Reason::BeforePurge).await
}

/// Takes a restore point (`reason`) of an environment's running bindings;
/// none when it has none or backups are off.
async fn keep_data(
    control: &Control,
    project: &ProjectRow,
    env: &EnvironmentRow,
    reason: Reason,
) -> ControlResult<Option<String>> {
    let running: Vec<String> = control
        .store()?
        .environment_bindings(&env.id)
        .await?
        .into_iter()
        .filter(|(_, b)| crate::is_running(b))
        .map(|(_, b)| b.id)
        .collect();
    if running.is_empty() || control.backups().is_err() {
        return Ok(None);
    }
    let point = control
        .take_restore_point(project, env, reason, Some(&running))
        .await?;
    if point.state != "complete" {
        return Err(ControlError::Failed {
            code: "BACKUP_FAILED",
            message: format!(
                "nothing was purged: the restore point of {:?} failed ({})",
                env.name,
                point.error.unwrap_or_default()
            ),
            details: None,
        });
    }
    Ok(Some(point.id))
}

async fn delete_keeping(
    control: &Control,
    project: &ProjectRow,
    env: &EnvironmentRow,
    purge: bool,
    reason: Reason,
) -> ControlResult<Option<String>> {
    let mut point = None;
    if env.is_default {
        return Err(ControlError::conflict(
            "ENVIRONMENT_IS_DEFAULT",
            "the default environment cannot be deleted",
        ));
    }
    let store = control.store()?;
    let bound = store.environment_bindings(&env.id).await?;
    if !bound.is_empty() || store.environment_has_bindings(&env.id).await? {
        if !purge {
            return Err(ControlError::conflict(
                "ENVIRONMENT_HAS_DATA",
                format!(
                    "environment {:?} has data-service bindings; delete it with ?purge=true \
                     to drop their data too",
                    env.name
                ),
            ));
        }
        point = keep_data(control, project, env, reason).await?;
        let reconciler = control.reconciler()?;
        for (service, binding) in bound {
            reconciler
                .remove_now(&service, &binding)
                .await
                .map_err(|e| ControlError::internal(format!("purging {}: {e}", binding.id)))?;
        }
    }
    control
        .deployer()?
        .retire_environment(control, &env.id)
        .await
        .map_err(|e| ControlError::internal(e.to_string()))?;
    if !store.delete_environment(&env.id).await? {
        return Err(ControlError::not_found("environment", &env.name));
    }
    tracing::info!(
        project = project.id,
        environment = env.name,
        restore_point = point,
        "deleted an environment"
    );
    Ok(point)
}

/// Purges every environment whose time is up: a restore point of its
/// running bindings first (none taken, nothing purged: tried again next
/// sweep), then the environment, and an audit event either way.
pub async fn expire_due(control: &Control) -> ControlResult<usize> {
    let store = control.store()?;
    let mut purged = 0;
    for (tenant, env) in store.expired_environments().await? {
        let Some(project) = store.project(&tenant, &env.project_id).await? else {
            continue;
        };
        let outcome = expire_one(control, &project, &env).await;
        let (result, detail) = match &outcome {
            Ok(point) => (
                "ok",
                format!(
                    "expired at {}; {}",
                    env.expires_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    match point {
                        Some(id) => format!("its data is in restore point {id}"),
                        None => "it held no data".to_string(),
                    }
                ),
            ),
            Err(e) => ("failed", format!("not purged, tried again: {e}")),
        };
        control.record(crate::audit::system_event(
            "environment.expire",
            Some(tenant.clone()),
            Some(project.id.clone()),
            &format!("/projects/{}/environments/{}", project.id, env.id),
            result,
            detail,
        ));
        match outcome {
            Ok(_) => purged += 1,
            Err(e) => {
                tracing::warn!(environment = env.id, error = %e, "could not expire an environment")
            }
        }
    }
    Ok(purged)
}

async fn expire_one(
    control: &Control,
    project: &ProjectRow,
    env: &EnvironmentRow,
) -> ControlResult<Option<String>> {
    delete_keeping(control, project, env, true, Reason::BeforeExpiry).await
}

/// Sweeps for expired environments, copies whose server died and
/// rotations whose grace period is over, every `every`.
pub fn spawn_expiry(control: Control, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !control.is_ready() {
                continue;
            }
            if let Err(e) = expire_due(&control).await {
                tracing::warn!(error = %e, "the expiry sweep failed; tried again");
            }
            // Copies a killed server left half done start again.
            if let Err(e) = data::start_copies(&control, None).await {
                tracing::warn!(error = %e, "could not look for unfinished copies; tried again");
            }
            // Grace periods of rotated credentials that are over.
            if let Err(e) = crate::rotation::sweep(&control).await {
                tracing::warn!(error = %e, "the rotation sweep failed; tried again");
            }
        }
    });
}
