//! Previews with data (issue 18): `mds envs create preview/pr-42 --from
//! production --data copy` fills the new environment's data services from
//! a restore point of the source, never from its live data:
//!
//! - Postgres: a clone of the point's checked template copy (`copy`, then
//!   the masks) or the dump's tables without rows (`schema`);
//! - storage: the point's bucket index, sharing every chunk;
//! - Redis: the point's RDB; volumes: the point's snapshot;
//! - auth: the realm's users without their sessions (`auth_users`).
//!
//! The environment is `copying` until every service is filled, and nothing
//! boots in it before it is `ready` ([`check_ready`]). The copy runs under a
//! lease of this server's incarnation; a kill -9 leaves it `copying`, and
//! the next sweep (of any server) starts it again from the same point.

use mds_api_types::{CopiedService, CreateEnvironment, EnvironmentData};
use mds_core::kinds::ServiceKind;
use mds_store::{EnvironmentRow, ProjectRow, RestorePointRow};

use super::masks::Mask;
use crate::backups::points::Reason;
use crate::backups::{fill_item, item_kind, item_skipped, Fill};
use crate::{Control, ControlError, ControlResult};

/// How long a copy waits for the preview's new bindings to run.
const BINDINGS_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

const POLICIES: [&str; 3] = ["empty", "schema", "copy"];

/// What `body` asks of the new environment's data, checked: none when it
/// names no source. A 422 names the field at fault.
pub async fn plan(
    control: &Control,
    project: &ProjectRow,
    body: &CreateEnvironment,
) -> ControlResult<Option<serde_json::Value>> {
    let Some(source) = body.source_environment.as_deref() else {
        let given = [
            ("data_policy", body.data_policy.is_some()),
            ("masks", body.masks.is_some()),
            ("auth_users", body.auth_users.is_some()),
            ("restore_point", body.restore_point.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(_, given)| *given) {
            return Err(ControlError::invalid(
                *field,
                "needs source_environment, the environment whose data to take (--from)",
            ));
        }
        return Ok(None);
    };
    let policy = body.data_policy.as_deref().unwrap_or("copy");
    if !POLICIES.contains(&policy) {
        return Err(ControlError::invalid(
            "data_policy",
            format!("must be one of empty, schema, copy; got {policy:?}"),
        ));
    }
    let auth_users =
        body.auth_users
            .as_deref()
            .unwrap_or(if policy == "copy" { "copy" } else { "none" });
    if !["copy", "none"].contains(&auth_users) {
        return Err(ControlError::invalid(
            "auth_users",
            format!("must be copy or none; got {auth_users:?}"),
        ));
    }
    let masks = body.masks.clone().unwrap_or_default();
    let parsed = Mask::parse_all(&masks)?;
    if !parsed.is_empty() && policy != "copy" {
        return Err(ControlError::invalid(
            "masks",
            format!("masks apply to copied rows; data_policy {policy} copies none"),
        ));
    }
    let store = control.store()?;
    let source_env = store
        .environment(&project.id, source)
        .await?
        .ok_or_else(|| {
            ControlError::invalid(
                "source_environment",
                format!("project {} has no environment {source:?}", project.slug),
            )
        })?;
    if store.environment_bindings(&source_env.id).await?.is_empty() {
        return Err(ControlError::invalid(
            "source_environment",
            format!(
                "environment {:?} has no data service to copy; attach one (mds attach) or \
                 create the environment without a source",
                source_env.name
            ),
        ));
    }
    let restore_point = match body.restore_point.as_deref() {
        None => None,
        Some("new") => Some("new".to_string()),
        Some(id) => {
            let point = store
                .restore_point(id)
                .await?
                .filter(|p| p.project_id == project.id)
                .ok_or_else(|| {
                    ControlError::invalid("restore_point", format!("no restore point {id:?}"))
                })?;
            if point.environment_id != source_env.id || point.state != "complete" {
                return Err(ControlError::invalid(
                    "restore_point",
                    format!(
                        "restore point {id} is a {} point of {:?}; name a complete one of {:?}",
                        point.state, point.environment, source_env.name
                    ),
                ));
            }
            Some(point.id)
        }
    };
    let data = EnvironmentData {
        source_environment_id: source_env.id,
        source_environment: source_env.name,
        policy: policy.to_string(),
        auth_users: auth_users.to_string(),
        masks,
        state: "copying".to_string(),
        restore_point,
        error: None,
        services: Vec::new(),
    };
    Ok(Some(
        serde_json::to_value(data).map_err(ControlError::internal)?,
    ))
}

/// Refuses a boot in an environment whose data is not ready.
pub fn check_ready(env: &EnvironmentRow) -> ControlResult<()> {
    match env.data_state.as_deref() {
        None | Some("ready") => Ok(()),
        Some(state) => {
            let data = view(env);
            let why = match (state, data.as_ref().and_then(|d| d.error.as_deref())) {
                ("failed", Some(error)) => {
                    format!("its copy failed: {error}; delete it and create it again")
                }
                _ => format!(
                    "its data is being copied from {}; wait until `mds envs get` says ready",
                    data.map(|d| d.source_environment).unwrap_or_default()
                ),
            };
            Err(ControlError::conflict(
                "ENVIRONMENT_NOT_READY",
                format!("nothing boots in environment {:?} yet: {why}", env.name),
            ))
        }
    }
}

/// The environment's data as shown, its state from the row.
pub fn view(env: &EnvironmentRow) -> Option<EnvironmentData> {
    let mut data: EnvironmentData = serde_json::from_value(env.data_copy.clone()?).ok()?;
    if let Some(state) = &env.data_state {
        data.state = state.clone();
    }
    Some(data)
}

/// Starts the copies that are due: `only` that environment (just made),
/// or every one whose holder is gone. Each runs in its own task.
pub async fn start_copies(control: &Control, only: Option<&str>) -> ControlResult<usize> {
    let incarnation = control
        .reconciler()?
        .incarnation()
        .await
        .map_err(|e| ControlError::internal(e.to_string()))?;
    let claimed = control
        .store()?
        .claim_environment_copies(incarnation, only)
        .await?;
    let count = claimed.len();
    for (tenant, env) in claimed {
        let control = control.clone();
        tokio::spawn(async move { copy(&control, &tenant, &env).await });
    }
    Ok(count)
}

/// Fills `env`, then says how it went: in the row and in the audit log.
async fn copy(control: &Control, tenant: &str, env: &EnvironmentRow) {
    let Some(mut data) = view(env) else {
        tracing::error!(
            environment = env.id,
            "an environment copy that cannot be read"
        );
        return;
    };
    tracing::info!(
        environment = env.id,
        source = data.source_environment,
        policy = data.policy,
        "copying data into a new environment"
    );
    let outcome = fill(control, tenant, env, &mut data).await;
    let (state, result, detail) = match &outcome {
        Ok(()) => (
            "ready",
            "ok",
            format!(
                "{} of {} from restore point {}: {}",
                data.policy,
                data.source_environment,
                data.restore_point.as_deref().unwrap_or("-"),
                data.services
                    .iter()
                    .map(|s| format!("{} {}", s.name, s.data))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Err(e) => ("failed", "failed", e.to_string()),
    };
    data.state = state.to_string();
    if let Err(e) = &outcome {
        data.error = Some(e.to_string());
        tracing::error!(environment = env.id, error = %e, "an environment copy failed");
    } else {
        tracing::info!(environment = env.id, "an environment copy is ready");
    }
    let written = match (control.store(), serde_json::to_value(&data)) {
        (Ok(store), Ok(value)) => store
            .set_environment_copy(&env.id, &value, Some(state))
            .await
            .map_err(|e| e.to_string()),
        (Err(e), _) => Err(e.to_string()),
        (_, Err(e)) => Err(e.to_string()),
    };
    if let Err(e) = written {
        // Still `copying` under a lease that lapses: the next start copies again.
        tracing::error!(
            environment = env.id,
            error = e,
            "could not record an environment copy"
        );
        return;
    }
    control.record(crate::audit::system_event(
        "environment.copy",
        Some(tenant.to_string()),
        Some(env.project_id.clone()),
        &format!("/projects/{}/environments/{}", env.project_id, env.id),
        result,
        detail,
    ));
}

async fn fill(
    control: &Control,
    tenant: &str,
    env: &EnvironmentRow,
    data: &mut EnvironmentData,
) -> ControlResult<()> {
    let store = control.store()?;
    let project = store
        .project(tenant, &env.project_id)
        .await?
        .ok_or_else(|| ControlError::not_found("project", &env.project_id))?;
    let source = store
        .environment(&project.id, &data.source_environment_id)
        .await?
        .ok_or_else(|| {
            ControlError::invalid(
                "source_environment",
                format!("environment {:?} was deleted", data.source_environment),
            )
        })?;
    let point = source_point(control, &project, &source, data).await?;
    data.restore_point = Some(point.id.clone());
    store
        .set_environment_copy(
            &env.id,
            &serde_json::to_value(&*data).map_err(ControlError::internal)?,
            None,
        )
        .await?;
    let masks = Mask::parse_all(&data.masks)?;
    let targets = running_bindings(control, &project, env).await?;
    data.services.clear();
    for item in &point.items {
        if item_skipped(item).is_some() {
            continue;
        }
        let Some((_, target)) = targets.iter().find(|(s, _)| s.id == item.service_id) else {
            continue;
        };
        let kind = item_kind(item)?;
        let fill = match (kind, data.policy.as_str()) {
            (ServiceKind::Auth, _) if data.auth_users == "copy" => Some(Fill::Users),
            (ServiceKind::Auth, _) => None,
            (ServiceKind::Postgres, "schema") => Some(Fill::Schema),
            (_, "copy") => Some(Fill::Copy { masks: &masks }),
            _ => None,
        };
        let (what, detail) = match fill {
            None => ("empty", "left empty".to_string()),
            Some(fill) => {
                let what = match fill {
                    Fill::Schema => "schema",
                    _ => "copy",
                };
                let detail = fill_item(control, item, target, fill).await.map_err(|e| {
                    ControlError::Failed {
                        code: "COPY_FAILED",
                        message: format!("copying {}: {e}", item.service_name),
                        details: None,
                    }
                })?;
                (what, detail)
            }
        };
        data.services.push(CopiedService {
            name: item.service_name.clone(),
            kind: kind.as_str().to_string(),
            data: what.to_string(),
            detail,
        });
    }
    Ok(())
}

/// The point to fill from: the one named, else the source's newest
/// verified one, else (or with `new`) one taken now.
async fn source_point(
    control: &Control,
    project: &ProjectRow,
    source: &EnvironmentRow,
    data: &EnvironmentData,
) -> ControlResult<RestorePointRow> {
    let store = control.store()?;
    match data.restore_point.as_deref() {
        Some("new") | None => {}
        Some(id) => {
            return match store.restore_point(id).await? {
                Some(point) if point.state == "complete" => Ok(point),
                _ => Err(ControlError::conflict(
                    "RESTORE_POINT_NOT_COMPLETE",
                    format!("restore point {id} is gone or not complete"),
                )),
            }
        }
    }
    if data.restore_point.is_none() {
        let verified = store
            .restore_points(&project.id, Some(&source.id))
            .await?
            .into_iter()
            .find(|p| p.state == "complete" && p.verification == "passed");
        if let Some(point) = verified {
            return Ok(point);
        }
    }
    let point = control
        .take_restore_point(project, source, Reason::ForPreview, None)
        .await?;
    if point.state != "complete" {
        return Err(ControlError::conflict(
            "RESTORE_POINT_NOT_COMPLETE",
            format!(
                "the restore point of {:?} taken for this copy is {}: {}",
                source.name,
                point.state,
                point.error.unwrap_or_default()
            ),
        ));
    }
    Ok(point)
}

/// The environment's bindings, once every data service of the project
/// that applies to it has one running.
async fn running_bindings(
    control: &Control,
    project: &ProjectRow,
    env: &EnvironmentRow,
) -> ControlResult<Vec<(mds_store::DataServiceRow, mds_store::BindingRow)>> {
    let store = control.store()?;
    let reconciler = control.reconciler()?;
    let deadline = tokio::time::Instant::now() + BINDINGS_WAIT;
    // Once: a pass makes the missing bindings (a wake per poll would
    // start twenty passes a second).
    reconciler.wake();
    loop {
        let services: Vec<_> = store
            .data_services(&project.id)
            .await?
            .into_iter()
            .filter(|s| !s.deleting && s.environment_id.as_deref().is_none_or(|e| e == env.id))
            .collect();
        let bound = store.environment_bindings(&env.id).await?;
        let waiting: Vec<String> = services
            .iter()
            .filter(|s| {
                !bound
                    .iter()
                    .any(|(bs, b)| bs.id == s.id && crate::is_running(b))
            })
            .map(|s| s.name.clone())
            .collect();
        if waiting.is_empty() {
            return Ok(bound);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ControlError::Failed {
                code: "COPY_FAILED",
                message: format!(
                    "the environment's own {} did not start within {} s",
                    waiting.join(", "),
                    BINDINGS_WAIT.as_secs()
                ),
                details: None,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
