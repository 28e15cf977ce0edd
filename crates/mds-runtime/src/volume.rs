//! Volumes on this host, under `DIR/volumes/ID/`:
//!
//! - `ext4` (when mds runs as root and loop devices exist): `image.ext4`, a
//!   sparse file of exactly the volume's size with an ext4 filesystem,
//!   loop-mounted at `mnt/`; writes past the size fail with ENOSPC.
//! - `dir` (otherwise): `mnt/` is a plain directory; usage is measured and
//!   reported, the size is not enforced.
//!
//! Either way `mnt/` is what a sandbox bind-mounts, and its root belongs
//! to the account sandbox commands run as. Snapshots are point-in-time
//! copies in `snapshots/`.

use std::os::unix::fs::{chown, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::process::Command;

use crate::jail::{Jail, Mount, Network, Spec, WORKSPACE};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VolumeError(pub String);

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> VolumeError {
    move |e| VolumeError(format!("{what}: {e}"))
}

pub const EXT4: &str = "ext4";
pub const DIR: &str = "dir";

pub struct Volumes {
    root: PathBuf,
    user: Option<(u32, u32)>,
    can_loop: bool,
    /// Copies and walks of `dir` volumes run jailed, so that symlinks a
    /// sandbox planted resolve inside the jail, never on the host.
    jail: Option<Jail>,
    /// One operation at a time per volume (attach, snapshot, restore,
    /// delete).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

async fn run(program: &str, args: &[&str]) -> Result<(), VolumeError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(io(format!("running {program}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(VolumeError(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), VolumeError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io(format!("creating {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", path.display())))
}

/// Whether `path` is a mount point now.
fn is_mounted(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| unescape_mount_point(mount_point) == wanted)
}

/// mountinfo writes space, tab, newline and backslash as `\NNN` (octal).
fn unescape_mount_point(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = (bytes[i] == b'\\' && i + 4 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 4]).ok())
            .flatten()
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        if let Some(n) = octal {
            out.push(n);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether this host can make ext4 volumes: root, loop devices, the tools.
fn can_loop() -> bool {
    let tool = |name: &str| {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|dir| Path::new(dir).join(name).is_file())
    };
    nix::unistd::Uid::effective().is_root()
        && Path::new("/dev/loop-control").exists()
        && tool("mkfs.ext4")
        && tool("mount")
}

/// `ext4` where size can be enforced (root, loop devices), else `dir`.
pub fn default_backend() -> &'static str {
    if can_loop() {
        EXT4
    } else {
        DIR
    }
}

impl Volumes {
    /// Volumes under `root`; `user` owns their contents (the account
    /// sandbox commands run as, when mds runs as root).
    pub fn new(
        root: &Path,
        user: Option<(u32, u32)>,
        jail: Option<Jail>,
    ) -> Result<Self, VolumeError> {
        mkdir(root, 0o701)?;
        Ok(Self {
            root: root.to_path_buf(),
            user,
            can_loop: can_loop(),
            jail,
            locks: Mutex::default(),
        })
    }

    /// Holds the volume's lock until the guard drops.
    pub async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .expect("never poisoned")
            .entry(id.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Runs `argv` jailed, with `workspace` as `/workspace` and `source`
    /// (read-only) as `/src`: for copies and walks of volume contents.
    async fn jailed(
        &self,
        workspace: &Path,
        source: Option<&Path>,
        argv: &[&str],
    ) -> Result<String, VolumeError> {
        let jail = self
            .jail
            .as_ref()
            .ok_or_else(|| VolumeError("bubblewrap is needed for directory volumes".into()))?;
        let spec = Spec {
            workspace: workspace.to_path_buf(),
            env: Vec::new(),
            cwd: WORKSPACE.to_string(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            mounts: source
                .map(|host| Mount {
                    host: host.to_path_buf(),
                    inside: "/src".into(),
                    writable: false,
                })
                .into_iter()
                .collect(),
            network: Network::Nothing,
        };
        let out = jail
            .command(&spec)
            .output()
            .await
            .map_err(io("running bubblewrap"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(VolumeError(format!(
                "{}: {}",
                argv.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// `ext4` where size can be enforced, else `dir`.
    pub fn default_backend(&self) -> &'static str {
        if self.can_loop {
            EXT4
        } else {
            DIR
        }
    }

    /// Whether `backend` can be made here.
    pub fn supports(&self, backend: &str) -> bool {
        backend == DIR || (backend == EXT4 && self.can_loop)
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// What sandboxes mount.
    pub fn data_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("mnt")
    }

    fn image(&self, id: &str) -> PathBuf {
        self.dir(id).join("image.ext4")
    }

    fn snapshot_path(&self, id: &str, snapshot: &str, backend: &str) -> PathBuf {
        let name = if backend == EXT4 {
            format!("{snapshot}.ext4")
        } else {
            snapshot.to_string()
        };
        self.dir(id).join("snapshots").join(name)
    }

    fn give_to_user(&self, path: &Path) -> Result<(), VolumeError> {
        if let Some((uid, gid)) = self.user {
            chown(path, Some(uid), Some(gid)).map_err(io(format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    /// Makes the volume usable (idempotent): its directory, and for ext4
    /// the image (made once) mounted.
    pub async fn materialize(
        &self,
        id: &str,
        backend: &str,
        size_bytes: u64,
    ) -> Result<(), VolumeError> {
        let dir = self.dir(id);
        mkdir(&dir, 0o701)?;
        let mnt = self.data_path(id);
        if backend == DIR {
            if !mnt.exists() {
                mkdir(&mnt, 0o700)?;
                self.give_to_user(&mnt)?;
            }
            return Ok(());
        }
        if !self.can_loop {
            return Err(VolumeError(
                "ext4 volumes need mds to run as root with loop devices".into(),
            ));
        }
        let image = self.image(id);
        if !image.exists() {
            let partial = dir.join("image.ext4.partial");
            let file = std::fs::File::create(&partial).map_err(io("creating the image"))?;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io("chmod the image"))?;
            file.set_len(size_bytes).map_err(io("sizing the image"))?;
            drop(file);
            let owner = self
                .user
                .map(|(u, g)| format!("root_owner={u}:{g}"))
                .unwrap_or_else(|| "root_owner=0:0".into());
            run(
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-m",
                    "0",
                    "-E",
                    &owner,
                    &partial.to_string_lossy(),
                ],
            )
            .await?;
            std::fs::rename(&partial, &image).map_err(io("placing the image"))?;
        }
        if !mnt.exists() {
            mkdir(&mnt, 0o700)?;
        }
        if !is_mounted(&mnt) {
            run(
                "mount",
                &[
                    "-o",
                    "loop,nosuid,nodev",
                    &image.to_string_lossy(),
                    &mnt.to_string_lossy(),
                ],
            )
            .await?;
            // The filesystem's root: its owner's only.
            std::fs::set_permissions(&mnt, std::fs::Permissions::from_mode(0o700))
                .map_err(io("chmod the volume's root"))?;
        }
        Ok(())
    }

    /// Bytes in use.
    pub async fn usage(&self, id: &str, backend: &str) -> u64 {
        let mnt = self.data_path(id);
        if backend == EXT4 && is_mounted(&mnt) {
            if let Ok(stat) = nix::sys::statvfs::statvfs(&mnt) {
                let used = stat.blocks().saturating_sub(stat.blocks_free());
                return used * stat.fragment_size();
            }
        }
        // Walked jailed: a symlink planted in the volume cannot lead the
        // walk anywhere on the host.
        self.jailed(
            &mnt,
            None,
            &["find", WORKSPACE, "-xdev", "-type", "f", "-printf", "%s\n"],
        )
        .await
        .map(|out| out.lines().filter_map(|l| l.parse::<u64>().ok()).sum())
        .unwrap_or(0)
    }

    /// A point-in-time copy. An ext4 volume is frozen for the copy, so it
    /// is consistent even while a sandbox writes.
    pub async fn snapshot(
        &self,
        id: &str,
        backend: &str,
        snapshot: &str,
    ) -> Result<(), VolumeError> {
        let target = self.snapshot_path(id, snapshot, backend);
        mkdir(target.parent().expect("under snapshots/"), 0o701)?;
        let mnt = self.data_path(id);
        if backend == EXT4 {
            // In a task of its own: if the caller goes away mid-copy, the
            // volume is still thawed.
            let image = self.image(id);
            let task = tokio::spawn(async move {
                let mounted = is_mounted(&mnt);
                if mounted {
                    run("fsfreeze", &["-f", &mnt.to_string_lossy()]).await?;
                }
                let copied = run(
                    "cp",
                    &[
                        "--sparse=always",
                        &image.to_string_lossy(),
                        &target.to_string_lossy(),
                    ],
                )
                .await;
                if mounted {
                    run("fsfreeze", &["-u", &mnt.to_string_lossy()]).await?;
                }
                copied
            });
            task.await.map_err(|e| VolumeError(e.to_string()))?
        } else {
            // Jailed, as the volume's owner: the copy follows no symlink
            // out of the volume.
            mkdir(&target, 0o700)?;
            self.give_to_user(&target)?;
            self.jailed(&target, Some(&mnt), &["cp", "-a", "/src/.", "/workspace/"])
                .await
                .map(|_| ())
        }
    }

    /// Deletes a snapshot's data (a restore point that held it expired).
    pub async fn delete_snapshot(
        &self,
        id: &str,
        backend: &str,
        snapshot: &str,
    ) -> Result<(), VolumeError> {
        let path = self.snapshot_path(id, snapshot, backend);
        let removed = if path.is_dir() {
            tokio::fs::remove_dir_all(&path).await
        } else {
            tokio::fs::remove_file(&path).await
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(VolumeError(format!("deleting snapshot {snapshot}: {e}")))
            }
            _ => Ok(()),
        }
    }

    /// Puts a snapshot back. The volume must be detached.
    pub async fn restore(
        &self,
        id: &str,
        backend: &str,
        snapshot: &str,
    ) -> Result<(), VolumeError> {
        self.restore_from(id, backend, id, snapshot).await
    }

    /// Puts snapshot `snapshot` of volume `from` (of the same backend) in
    /// place of volume `id`'s data: its own snapshot (a restore), or
    /// another volume's (a preview's copy of its source's).
    pub async fn restore_from(
        &self,
        id: &str,
        backend: &str,
        from: &str,
        snapshot: &str,
    ) -> Result<(), VolumeError> {
        let source = self.snapshot_path(from, snapshot, backend);
        if !source.exists() {
            return Err(VolumeError(format!(
                "snapshot {snapshot} has no data on this host"
            )));
        }
        let mnt = self.data_path(id);
        if backend == EXT4 {
            if is_mounted(&mnt) {
                run("umount", &[&mnt.to_string_lossy()]).await?;
            }
            let image = self.image(id);
            let partial = self.dir(id).join("image.ext4.partial");
            run(
                "cp",
                &[
                    "--sparse=always",
                    &source.to_string_lossy(),
                    &partial.to_string_lossy(),
                ],
            )
            .await?;
            std::fs::rename(&partial, &image).map_err(io("placing the image"))?;
            run(
                "mount",
                &[
                    "-o",
                    "loop,nosuid,nodev",
                    &image.to_string_lossy(),
                    &mnt.to_string_lossy(),
                ],
            )
            .await
        } else {
            let staged = self.dir(id).join("mnt.restoring");
            let _ = std::fs::remove_dir_all(&staged);
            mkdir(&staged, 0o700)?;
            self.give_to_user(&staged)?;
            self.jailed(
                &staged,
                Some(&source),
                &["cp", "-a", "/src/.", "/workspace/"],
            )
            .await?;
            let old = self.dir(id).join("mnt.old");
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(&mnt, &old).map_err(io("moving the old data aside"))?;
            std::fs::rename(&staged, &mnt).map_err(io("placing the restored data"))?;
            let _ = std::fs::remove_dir_all(&old);
            Ok(())
        }
    }

    /// Unmounts every ext4 volume (a clean stop): the next start mounts
    /// them again.
    pub async fn unmount_all(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let mnt = entry.path().join("mnt");
            // Processes that held files there may take a moment to go.
            for attempt in 0..20 {
                if !is_mounted(&mnt) {
                    break;
                }
                match run("umount", &[&mnt.to_string_lossy()]).await {
                    Ok(()) => break,
                    Err(e) if attempt == 19 => {
                        tracing::warn!(error = %e, "could not unmount a volume")
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                }
            }
        }
    }

    /// Removes the volume, its data and snapshots.
    pub async fn remove(&self, id: &str) -> Result<(), VolumeError> {
        let mnt = self.data_path(id);
        // Stacked mounts (a crash mid-restore) come off one by one.
        for _ in 0..8 {
            if !is_mounted(&mnt) {
                break;
            }
            run("umount", &[&mnt.to_string_lossy()]).await?;
        }
        let dir = self.dir(id);
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(VolumeError(format!("removing {}: {e}", dir.display())))
            }
            _ => Ok(()),
        })
        .await
        .map_err(|e| VolumeError(e.to_string()))?
    }
}
