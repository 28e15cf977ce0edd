//! The Volume provisioner: a volume row per binding (the filesystem is
//! made where it is first attached). Its data is removed by the server
//! that holds it.

use mds_core::env::VolumeAccess;
use mds_core::kinds::{BindingState, Desired};
use mds_store::{BindingRow, DataServiceRow};

use crate::{Ctx, Injected, ProvisionError, Provisioner};

/// A volume data service's volumes, unless its config says otherwise.
pub const DEFAULT_VOLUME_BYTES: i64 = 1 << 30;

/// The volume of a `volume` binding: `vol_` and the binding's ULID.
pub fn binding_volume(binding_id: &str) -> String {
    format!(
        "vol_{}",
        binding_id.strip_prefix("bnd_").unwrap_or(binding_id)
    )
}

pub(crate) struct VolumeProvisioner {
    /// What new volumes are made of: `ext4` or `dir`.
    pub backend: String,
}

impl Provisioner for VolumeProvisioner {
    async fn converge(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
        desired: Desired,
    ) -> Result<Option<BindingState>, ProvisionError> {
        let store = &ctx.store;
        let reached = match desired {
            Desired::Deleted => {
                store.delete_binding_volume(&binding.id).await?;
                return Ok(None);
            }
            Desired::Running => BindingState::Running,
            Desired::Stopped => BindingState::Stopped,
        };
        if store.binding_volume(&binding.id).await?.is_none() {
            let size = service.config["size_bytes"]
                .as_i64()
                .unwrap_or(DEFAULT_VOLUME_BYTES)
                .clamp(1 << 20, 500 << 30);
            let tenant = store.project_tenant(&service.project_id).await?;
            let id = binding_volume(&binding.id);
            let created = store
                .create_volume(&mds_store::NewVolume {
                    id: &id,
                    tenant_id: &tenant,
                    project_id: Some(&service.project_id),
                    binding_id: Some(&binding.id),
                    name: &binding.resource_name,
                    size_bytes: size,
                    backend: &self.backend,
                })
                .await;
            match created {
                Ok(()) => {}
                // Made by a pass that raced this one.
                Err(mds_store::StoreError::Conflict { .. })
                    if store.binding_volume(&binding.id).await?.is_some() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(reached))
    }

    /// Mounted, not connected to: no network endpoint.
    fn endpoint(&self, _binding: &BindingRow) -> (String, u16) {
        (String::new(), 0)
    }

    fn variables(
        &self,
        _ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Vec<Injected>, ProvisionError> {
        Ok(VolumeAccess {
            id: &binding_volume(&binding.id),
            name: &binding.resource_name,
        }
        .variables(&service.env_prefix))
    }
}
