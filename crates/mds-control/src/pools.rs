//! How a Postgres binding's clients are pooled (issue 17): the settings a
//! client asks for are checked here, kept on the binding (migrations 0023
//! and 0024), and served by the reconciler's pooler. The mode decides
//! which URL `DATABASE_URL` is at the next boot; the pool size and the
//! client limit apply to the pooler at once, without dropping anyone's
//! connections.

use mds_core::kinds::ServiceKind;
use mds_provision::POOL_MODES;
use mds_store::{DataServiceRow, EnvironmentRow, PoolChange};
use serde_json::{Map, Value};

use crate::{Control, ControlError, ControlResult};

/// Pool settings as a client gave them; `None` leaves one as it is,
/// `Some(None)` returns it to the server's default.
#[derive(Debug, Default, Clone)]
pub struct PoolRequest {
    pub mode: Option<String>,
    /// Server connections at most.
    pub size: Option<Option<i64>>,
    /// Client connections at most.
    pub max_clients: Option<Option<i64>>,
}

/// The settings' names, as the API and the SDK's `settings` take them.
const FIELDS: &str = "pool_mode, pool_size and pool_max_clients";

impl PoolRequest {
    /// From the SDK's service `settings` (`pool_mode`, `pool_size`,
    /// `pool_max_clients`; null returns one to its default). Any other key
    /// is refused by name.
    pub fn from_settings(settings: &Map<String, Value>) -> ControlResult<Self> {
        let mut request = Self::default();
        for (key, value) in settings {
            match (key.as_str(), value) {
                ("pool_mode", Value::Null) => request.mode = Some(POOL_MODES[0].to_string()),
                ("pool_mode", Value::String(mode)) => request.mode = Some(mode.clone()),
                ("pool_mode", _) => {
                    return Err(ControlError::invalid(
                        "settings.pool_mode",
                        "must be a string",
                    ))
                }
                ("pool_size", value) => {
                    request.size = Some(size_from_json("settings.pool_size", value)?)
                }
                ("pool_max_clients", value) => {
                    request.max_clients = Some(size_from_json("settings.pool_max_clients", value)?)
                }
                (other, _) => {
                    return Err(ControlError::invalid(
                        format!("settings.{other}"),
                        format!("not a setting of a database service; it takes {FIELDS}"),
                    ))
                }
            }
        }
        Ok(request)
    }

    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.size.is_none() && self.max_clients.is_none()
    }

    /// Refuses a request that changes nothing, naming what it may change.
    pub fn require_some(&self) -> ControlResult<()> {
        if self.is_empty() {
            return Err(ControlError::invalid(
                "pool_mode",
                format!("nothing to change: give one of {FIELDS}"),
            ));
        }
        Ok(())
    }

    /// Checks each field given: a mode the pooler knows, a pool size from
    /// 1 to the role's connection limit, a client limit from 1 to the
    /// pooler's, and only for Postgres.
    pub fn check(
        &self,
        control: &Control,
        kind: ServiceKind,
    ) -> ControlResult<PoolChange<'static>> {
        if kind != ServiceKind::Postgres {
            let given = [
                ("pool_mode", self.mode.is_some()),
                ("pool_size", self.size.is_some()),
                ("pool_max_clients", self.max_clients.is_some()),
            ];
            if let Some((field, _)) = given.iter().find(|(_, given)| *given) {
                return Err(ControlError::invalid(
                    *field,
                    format!("applies to postgres, not {kind}"),
                ));
            }
        }
        let mode = match &self.mode {
            None => None,
            Some(mode) => Some(
                POOL_MODES
                    .iter()
                    .copied()
                    .find(|m| m.eq_ignore_ascii_case(mode.trim()))
                    .ok_or_else(|| {
                        ControlError::invalid(
                            "pool_mode",
                            format!(
                                "{mode:?} is not a pool mode; use one of {}",
                                POOL_MODES.join(", ")
                            ),
                        )
                    })?,
            ),
        };
        let reconciler = control.reconciler()?;
        let size = within(
            self.size,
            reconciler.max_pool_size(),
            "pool_size",
            "each tenant role's connection limit, --tenant-connection-limit",
        )?;
        let max_clients = within(
            self.max_clients,
            reconciler.max_pool_max_clients(),
            "pool_max_clients",
            "the pooler's client connections in all, --pooler-max-clients",
        )?;
        Ok(PoolChange {
            mode,
            size,
            max_clients,
        })
    }
}

/// A number asked for, checked to be from 1 to `max` (`why` names where
/// the bound comes from).
fn within(
    asked: Option<Option<i64>>,
    max: u32,
    field: &str,
    why: &str,
) -> ControlResult<Option<Option<i32>>> {
    match asked {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(n)) => match i32::try_from(n) {
            Ok(ok) if ok >= 1 && ok as u32 <= max => Ok(Some(Some(ok))),
            _ => Err(ControlError::invalid(
                field,
                format!("{n} is not allowed here: from 1 to {max} ({why})"),
            )),
        },
    }
}

/// A pool size as JSON gives it: a whole number, or null for the
/// server's default.
pub fn size_from_json(field: &str, value: &Value) -> ControlResult<Option<i64>> {
    match value {
        Value::Null => Ok(None),
        value => value.as_i64().map(Some).ok_or_else(|| {
            ControlError::invalid(field, "must be a whole number, or null for the default")
        }),
    }
}

/// Sets the pooling of `service`'s binding in `environment` (every
/// binding, and the default of ones made later, without), then makes the
/// pooler serve it. A service that is not Postgres is refused.
pub async fn set_pool(
    control: &Control,
    service: &DataServiceRow,
    environment: Option<&EnvironmentRow>,
    request: &PoolRequest,
) -> ControlResult<()> {
    let kind = mds_provision::service_kind(service)?;
    let change = request.check(control, kind)?;
    apply(control, service, environment, &change).await
}

/// Stores a checked change and syncs the pooler.
pub(crate) async fn apply(
    control: &Control,
    service: &DataServiceRow,
    environment: Option<&EnvironmentRow>,
    change: &PoolChange<'_>,
) -> ControlResult<()> {
    if change.is_empty() {
        return Ok(());
    }
    let changed = control
        .store()?
        .set_binding_pool(&service.id, environment.map(|e| e.id.as_str()), change)
        .await?;
    if changed == 0 {
        if let Some(env) = environment {
            return Err(ControlError::not_found(
                "binding of this data service in environment",
                &env.name,
            ));
        }
    }
    tracing::info!(
        service = service.id,
        environment = environment.map(|e| e.name.as_str()),
        mode = change.mode,
        size = ?change.size,
        max_clients = ?change.max_clients,
        "changed pooling"
    );
    control.reconciler()?.sync_pooler().await?;
    Ok(())
}
