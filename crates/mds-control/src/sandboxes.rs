//! What sandboxes need from more than one place: the volumes their
//! commands mount.

use mds_runtime::jail::Mount;

use crate::{Control, ControlResult};

impl Control {
    /// What a sandbox's commands mount: its live attachments. Read at each
    /// command, so a lease that ended (detach, or another holder since) is
    /// never mounted.
    pub async fn sandbox_mounts(&self, sandbox_id: &str) -> ControlResult<Vec<Mount>> {
        let volumes = self.volumes()?;
        Ok(self
            .store()?
            .holder_attachments(sandbox_id)
            .await?
            .into_iter()
            .map(|a| Mount {
                host: volumes.data_path(&a.volume_id),
                inside: a.mount_path,
                writable: true,
            })
            .collect())
    }
}
