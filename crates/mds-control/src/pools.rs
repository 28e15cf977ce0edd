//! How a Postgres binding's clients are pooled (issue 17): the settings a
//! client asks for are checked here, kept on the binding (migration 0023),
//! and served by the reconciler's pooler. The mode decides which URL
//! `DATABASE_URL` is at the next boot; the size applies to the pooler at
//! once, without dropping anyone's connections.

use mds_core::kinds::ServiceKind;
use mds_provision::POOL_MODES;
use mds_store::{DataServiceRow, EnvironmentRow};
use serde_json::{Map, Value};

use crate::{Control, ControlError, ControlResult};

/// Pool settings as a client gave them; `None` leaves one as it is.
#[derive(Debug, Default, Clone)]
pub struct PoolRequest {
    pub mode: Option<String>,
    /// `Some(None)`: back to the server's default.
    pub size: Option<Option<i64>>,
}

/// A checked [`PoolRequest`], in the store's words.
pub struct PoolChange {
    pub mode: Option<&'static str>,
    pub size: Option<Option<i32>>,
}

impl PoolRequest {
    /// From the SDK's service `settings` (`pool_mode`, `pool_size`; null
    /// returns one to its default). Any other key is refused by name.
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
                (other, _) => {
                    return Err(ControlError::invalid(
                        format!("settings.{other}"),
                        "not a setting of a database service; it takes pool_mode and pool_size",
                    ))
                }
            }
        }
        Ok(request)
    }

    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.size.is_none()
    }

    /// Checks each field given: a mode the pooler knows, a size from 1 to
    /// the role's connection limit, and only for Postgres.
    pub fn check(&self, control: &Control, kind: ServiceKind) -> ControlResult<PoolChange> {
        if kind != ServiceKind::Postgres {
            let field = if self.mode.is_some() {
                Some("pool_mode")
            } else {
                self.size.is_some().then_some("pool_size")
            };
            if let Some(field) = field {
                return Err(ControlError::invalid(
                    field,
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
        let size = match self.size {
            None => None,
            Some(None) => Some(None),
            Some(Some(size)) => {
                let max = control.reconciler()?.max_pool_size();
                match i32::try_from(size) {
                    Ok(n) if n >= 1 && n as u32 <= max => Some(Some(n)),
                    _ => {
                        return Err(ControlError::invalid(
                            "pool_size",
                            format!(
                                "{size} is not a pool size here: from 1 to {max} (each tenant \
                                 role's connection limit, --tenant-connection-limit)"
                            ),
                        ))
                    }
                }
            }
        };
        Ok(PoolChange { mode, size })
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
    change: &PoolChange,
) -> ControlResult<()> {
    if change.mode.is_none() && change.size.is_none() {
        return Ok(());
    }
    let changed = control
        .store()?
        .set_binding_pool(
            &service.id,
            environment.map(|e| e.id.as_str()),
            change.mode,
            change.size,
        )
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
        "changed pooling"
    );
    control.reconciler()?.sync_pooler().await?;
    Ok(())
}
