//! Credential rotation with overlap (issue 18): `mds credentials rotate`.
//! For each binding of an environment that has credentials (Redis, like
//! Postgres: two ACL users that take turns, reaching the same keys, the
//! old one deleted after the grace period, which ends its connections;
//! storage: a second
//! key pair, told apart by its access key id; auth: a new
//! `AUTH_JWT_SECRET` signs, and the old one still verifies):
//!
//! 1. new credentials are made *pending* (the next generation's login
//!    role, a member of the owner role that acts as it) and proved to work,
//!    directly and through the pooler, while the current ones still serve;
//! 2. they become current, and the replaced ones stay valid for the grace
//!    period: new boots get the new ones;
//! 3. the environment's deployments are restarted one at a time (a new
//!    instance serves once healthy, the old one drains);
//! 4. when the grace period is over, the sweep revokes the old login
//!    (Postgres `NOLOGIN`, Redis `ACL DELUSER`, the old key pair and
//!    signing secret forgotten) and ends its sessions.
//!
//! One rotation of a binding at a time (409). A kill -9 before step 2
//! leaves the current credentials current; the sweep drops the pending
//! ones. After step 2 both sets work until the sweep ends the grace.

use std::time::Duration;

use chrono::Utc;
use mds_api_types::backups::{
    NotRestored, RotateRequest, RotatedService, RotationResult, RotationSchedule,
};
use mds_core::kinds::ServiceKind;
use mds_store::{BindingRow, DataServiceRow, EnvironmentRow};

use crate::projects::load_environment;
use crate::{Caller, Control, ControlError, ControlResult};

pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);
const MAX_GRACE: Duration = Duration::from_secs(7 * 86400);
const MIN_EVERY: Duration = Duration::from_secs(3600);
const MAX_EVERY: Duration = Duration::from_secs(365 * 86400);

fn grace_of(raw: Option<&str>) -> ControlResult<Duration> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_GRACE);
    };
    let grace = mds_core::spans::parse_span(raw).map_err(|e| ControlError::invalid("grace", e))?;
    if grace < Duration::from_secs(1) || grace > MAX_GRACE {
        return Err(ControlError::invalid(
            "grace",
            format!("{raw:?} is out of range: from 1s to 7d"),
        ));
    }
    Ok(grace)
}

fn provision_error(e: impl std::fmt::Display) -> ControlError {
    ControlError::Failed {
        code: "ROTATION_FAILED",
        message: format!("the credentials did not change: {e}"),
        details: None,
    }
}

impl Control {
    /// `mds credentials rotate` / `POST .../credentials/rotate`.
    pub async fn rotate_credentials(
        &self,
        caller: &Caller,
        project: &str,
        environment: &str,
        request: RotateRequest,
    ) -> ControlResult<RotationResult> {
        let grace = grace_of(request.grace.as_deref())?;
        let (_, env) = load_environment(self.store()?, caller, project, Some(environment)).await?;
        self.rotate_in(&env, request.service.as_deref(), grace, None)
            .await
    }

    /// Rotates the credentials of `env`'s bindings (of `service` only,
    /// when given; with `made_before`, only those made before then and in
    /// no rotation: a schedule's), the replaced ones valid for `grace`.
    async fn rotate_in(
        &self,
        env: &EnvironmentRow,
        service: Option<&str>,
        grace: Duration,
        made_before: Option<chrono::DateTime<Utc>>,
    ) -> ControlResult<RotationResult> {
        let store = self.store()?;
        let reconciler = self.reconciler()?;
        let wanted = |name: &str| service.is_none_or(|s| s == name);
        let mut targets: Vec<(DataServiceRow, BindingRow)> = Vec::new();
        let mut not_rotated = Vec::new();
        for (service, binding) in store.environment_bindings(&env.id).await? {
            if !wanted(&service.name) {
                continue;
            }
            let made = binding.credentials_at.unwrap_or(binding.created_at);
            let in_rotation = binding.previous_sealed_password.is_some()
                || binding.pending_sealed_password.is_some();
            let why = match mds_provision::service_kind(&service) {
                Ok(ServiceKind::Volume) => {
                    Some("a volume has no credentials: it is mounted, not logged in to".to_string())
                }
                Ok(_) if made_before.is_some_and(|t| made > t || in_rotation) => {
                    Some("its credentials are not due for the schedule".to_string())
                }
                Ok(_) if crate::is_running(&binding) => None,
                Ok(_) => Some(format!("its binding is {}", binding.state)),
                Err(e) => Some(e.to_string()),
            };
            match why {
                None => targets.push((service, binding)),
                Some(reason) => not_rotated.push(NotRestored {
                    name: service.name,
                    reason,
                }),
            }
        }
        if targets.is_empty() {
            if let Some(name) = service {
                if not_rotated.is_empty() {
                    return Err(ControlError::not_found("service", name));
                }
            }
            return Err(ControlError::invalid(
                "service",
                format!(
                    "nothing to rotate in {}: {}",
                    env.name,
                    match not_rotated.is_empty() {
                        true => "it has no data service".to_string(),
                        false => not_rotated
                            .iter()
                            .map(|n| format!("{}: {}", n.name, n.reason))
                            .collect::<Vec<_>>()
                            .join("; "),
                    }
                ),
            ));
        }
        // 1. Pending credentials, one rotation per binding.
        let holder = reconciler
            .incarnation()
            .await
            .map_err(|e| ControlError::internal(e.to_string()))?;
        let mut begun: Vec<&BindingRow> = Vec::new();
        for (service, binding) in &targets {
            let password = mds_provision::Reconciler::new_password();
            let sealed = reconciler.seal_password(&binding.id, &password);
            if !store.begin_rotation(&binding.id, &sealed, holder).await? {
                self.abandon_rotations(&begun).await;
                return Err(ControlError::conflict(
                    "ROTATION_IN_PROGRESS",
                    format!(
                        "{} in {} is being rotated, or its previous credentials are still in \
                         their grace period ({}); wait for it to end",
                        service.name,
                        env.name,
                        binding
                            .previous_until
                            .map(|t| format!("until {}", mds_api_types::time::format(&t)))
                            .unwrap_or_else(|| "another rotation".to_string())
                    ),
                ));
            }
            begun.push(binding);
        }
        for (service, binding) in &targets {
            let proved = async {
                let (_, pending) = store
                    .binding_with_service(&binding.id)
                    .await?
                    .ok_or_else(|| ControlError::not_found("binding", &binding.id))?;
                reconciler
                    .converge_now(service, &pending)
                    .await
                    .map_err(provision_error)
            }
            .await;
            if let Err(e) = proved {
                self.abandon_rotations(&begun).await;
                return Err(e);
            }
        }
        // 2. The switch: new boots get the new credentials.
        let until = Utc::now() + chrono::Duration::from_std(grace).unwrap_or_default();
        let mut rotated = Vec::new();
        for (service, binding) in &targets {
            store.commit_rotation(&binding.id, until).await?;
            // Realms sign with the new secret at once (their cache holds
            // the old one for 2 s otherwise).
            self.auth.forget(&service.project_id);
            rotated.push(RotatedService {
                name: service.name.clone(),
                kind: service.kind.clone(),
                user: new_user(service, binding),
                previous_valid_until: until,
            });
        }
        tracing::info!(
            environment = env.id,
            services = rotated.len(),
            grace_secs = grace.as_secs(),
            "rotated credentials; the old ones work until the grace period ends"
        );
        // 3. Running instances boot again with them, one at a time.
        let restarted = match self.deployer() {
            Ok(deployer) => deployer.restart_environment(self, &env.id).await,
            Err(_) => 0,
        };
        Ok(RotationResult {
            environment: env.name.clone(),
            rotated,
            not_rotated,
            restarted,
        })
    }

    /// `PUT .../credentials/schedule`: rotate `environment`'s credentials
    /// every `every` (1h to 365d; none: never), each replaced set valid for
    /// `grace`.
    pub async fn schedule_rotation(
        &self,
        caller: &Caller,
        project: &str,
        environment: &str,
        schedule: RotationSchedule,
    ) -> ControlResult<EnvironmentRow> {
        let every = schedule
            .rotate_every
            .as_deref()
            .map(|raw| {
                let every = mds_core::spans::parse_span(raw)
                    .map_err(|e| ControlError::invalid("rotate_every", e))?;
                if every < MIN_EVERY || every > MAX_EVERY {
                    return Err(ControlError::invalid(
                        "rotate_every",
                        format!("{raw:?} is out of range: from 1h to 365d"),
                    ));
                }
                Ok(every)
            })
            .transpose()?;
        let grace = grace_of(schedule.grace.as_deref())?;
        if every.is_some_and(|every| grace >= every) {
            return Err(ControlError::invalid(
                "grace",
                "the grace period must be shorter than the time between rotations",
            ));
        }
        let store = self.store()?;
        let (_, env) = load_environment(store, caller, project, Some(environment)).await?;
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        store
            .set_environment_rotation(&env.id, every.map(secs), every.map(|_| secs(grace)))
            .await?
            .ok_or_else(|| ControlError::not_found("environment", environment))
    }

    /// Drops the pending credentials of these bindings and revokes them.
    async fn abandon_rotations(&self, bindings: &[&BindingRow]) {
        for binding in bindings {
            if let Err(e) = self.finish_rotation_step(&binding.id, false).await {
                tracing::warn!(binding = binding.id, error = %e, "could not drop pending credentials; the sweep retries");
            }
        }
    }

    /// Drops a binding's pending credentials (`grace_over` false) or its
    /// previous ones, then makes the engine match: the dropped login may
    /// not log in and its sessions end.
    async fn finish_rotation_step(&self, binding_id: &str, grace_over: bool) -> ControlResult<()> {
        let store = self.store()?;
        match grace_over {
            true => store.end_grace(binding_id).await?,
            false => store.abandon_rotation(binding_id).await?,
        }
        let Some((service, binding)) = store.binding_with_service(binding_id).await? else {
            return Ok(());
        };
        self.auth.forget(&service.project_id);
        if crate::is_running(&binding) {
            self.reconciler()?
                .converge_now(&service, &binding)
                .await
                .map_err(provision_error)?;
        }
        Ok(())
    }
}

/// Whom a binding's next credentials name: Postgres and Redis their next
/// login, storage its next access key id, auth its next signing secret.
fn new_user(service: &DataServiceRow, binding: &BindingRow) -> String {
    let next = binding.credential_generation + 1;
    match mds_provision::service_kind(service) {
        Ok(ServiceKind::Storage) => mds_provision::storage_access_key_id(&binding.id, next),
        Ok(ServiceKind::Auth) => format!("AUTH_JWT_SECRET #{next}"),
        _ => mds_core::names::login_role(&binding.resource_name, next),
    }
}

/// Ends grace periods that are over, drops the pending credentials of
/// rotations whose server died, and rotates the environments whose
/// schedule says so; each is an audit event.
pub async fn sweep(control: &Control) -> ControlResult<usize> {
    let store = control.store()?;
    let mut done = 0;
    for (tenant, env) in store.rotations_scheduled_due().await? {
        let grace = Duration::from_secs(env.rotate_grace_secs.unwrap_or(600).max(1) as u64);
        let every = chrono::Duration::seconds(env.rotate_every_secs.unwrap_or_default());
        // Only the credentials that are due: others may be newer, or in a
        // rotation of their own (whose grace period would refuse this one).
        let outcome = control
            .rotate_in(&env, None, grace, Some(Utc::now() - every))
            .await;
        control.record(crate::audit::system_event(
            "credentials.rotate",
            Some(tenant),
            Some(env.project_id.clone()),
            &format!("/projects/{}/environments/{}", env.project_id, env.id),
            if outcome.is_ok() { "ok" } else { "failed" },
            match &outcome {
                Ok(result) => format!(
                    "scheduled (every {}s): {}",
                    env.rotate_every_secs.unwrap_or_default(),
                    result
                        .rotated
                        .iter()
                        .map(|r| format!("{} now {}", r.name, r.user))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Err(e) => format!("scheduled; tried again: {e}"),
            },
        ));
        match outcome {
            Ok(_) => done += 1,
            Err(e) => {
                tracing::warn!(environment = env.id, error = %e, "a scheduled rotation failed; tried again")
            }
        }
    }
    for (service, binding) in store.rotations_due().await? {
        let grace_over = binding
            .previous_until
            .is_some_and(|until| until <= Utc::now());
        let outcome = control.finish_rotation_step(&binding.id, grace_over).await;
        let (action, detail) = match grace_over {
            true => (
                "credentials.revoke",
                format!(
                    "the credentials of {} before its last rotation stopped working; their sessions ended",
                    service.name
                ),
            ),
            false => (
                "credentials.rotate",
                format!(
                    "a rotation of {} that did not finish (its server stopped) was rolled back; \
                     its credentials did not change",
                    service.name
                ),
            ),
        };
        let tenant = store.project_tenant(&service.project_id).await.ok();
        control.record(crate::audit::system_event(
            action,
            tenant,
            Some(service.project_id.clone()),
            &format!(
                "/projects/{}/data-services/{}",
                service.project_id, service.id
            ),
            if outcome.is_ok() { "ok" } else { "failed" },
            match &outcome {
                Ok(()) => detail,
                Err(e) => format!("{detail}: {e}; tried again"),
            },
        ));
        match outcome {
            Ok(()) => done += 1,
            Err(e) => {
                tracing::warn!(binding = binding.id, error = %e, "could not finish a rotation step; tried again")
            }
        }
    }
    Ok(done)
}
