//! The isolation backend: bubblewrap.
//!
//! A jailed command gets a root of its own: the host's `/usr` and `/etc`
//! read-only (with the usual `/bin`, `/lib`... links), fresh `/proc`,
//! `/dev` and `/tmp`, and its workspace at `/workspace`, the only
//! writable place besides mounted volumes. It runs in its own user, pid,
//! ipc and uts namespaces, as an unprivileged account, with exactly the
//! environment it was given. It shares the host's network, so it reaches
//! data services on loopback. Nothing else of the host (the mds data dir,
//! other workspaces, `/root`, `/home`) exists inside.

use std::path::{Path, PathBuf};

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error(
        "bubblewrap (bwrap) is not installed; install it with `apt-get install -y bubblewrap` \
         (scripts/install-deps does)"
    )]
    NoBubblewrap,
}

/// Where jailed processes find their workspace.
pub const WORKSPACE: &str = "/workspace";

/// The size of a jail's `/tmp` (memory).
const TMP_BYTES: &str = "268435456";

/// Host directories the jail sees read-only: programs and their
/// configuration, nothing with data in it.
const READ_ONLY: &[&str] = &["/usr", "/etc"];
/// Top-level names that are links into `/usr` on merged-usr systems and
/// directories elsewhere; either way the jail sees what the host has.
const LINKED: &[&str] = &["/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];

/// A host directory mounted into the jail (a volume).
#[derive(Debug, Clone)]
pub struct Mount {
    pub host: PathBuf,
    pub inside: String,
    pub writable: bool,
}

/// One jailed command.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The host directory that becomes `/workspace`.
    pub workspace: PathBuf,
    /// The whole environment (nothing of mds's own leaks in).
    pub env: Vec<(String, String)>,
    /// Working directory inside the jail.
    pub cwd: String,
    /// The program and its arguments.
    pub argv: Vec<String>,
    pub mounts: Vec<Mount>,
}

#[derive(Debug, Clone)]
pub struct Jail {
    bwrap: PathBuf,
    /// The account jailed processes run as when mds runs as root.
    user: Option<(u32, u32)>,
}

impl Jail {
    /// Finds bubblewrap. `user` is the (uid, gid) to drop to when mds runs
    /// as root (bubblewrap then needs unprivileged user namespaces, which
    /// Debian's kernels allow).
    pub fn find(user: Option<(u32, u32)>) -> Result<Self, JailError> {
        let bwrap = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/bin")])
            .map(|dir| dir.join("bwrap"))
            .find(|candidate| candidate.is_file())
            .ok_or(JailError::NoBubblewrap)?;
        Ok(Self { bwrap, user })
    }

    /// The account jailed processes run as, if mds drops to one.
    pub fn user(&self) -> Option<(u32, u32)> {
        self.user
    }

    /// The bubblewrap command line for `spec`; the caller spawns it (in a
    /// process group of its own, so that killing the group ends it all).
    pub fn command(&self, spec: &Spec) -> Command {
        let mut cmd = Command::new(&self.bwrap);
        cmd.args([
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "sandbox",
            "--die-with-parent",
            "--new-session",
            // The command is the namespace's pid 1: without a reaper of
            // bubblewrap's own, nothing is orphaned to the host's init
            // (which may not reap), and when the command ends, everything
            // it started ends with it.
            "--as-pid-1",
            // No namespaces of its own inside: nested user namespaces hand
            // out capabilities that kernel exploits start from.
            "--disable-userns",
        ]);
        for dir in READ_ONLY {
            cmd.args(["--ro-bind", dir, dir]);
        }
        for name in LINKED {
            let host = Path::new(name);
            match std::fs::read_link(host) {
                Ok(target) => {
                    cmd.arg("--symlink").arg(target).arg(name);
                }
                Err(_) if host.is_dir() => {
                    cmd.args(["--ro-bind", name, name]);
                }
                Err(_) => {}
            }
        }
        // /tmp is memory: bounded, so one command cannot take the host's.
        cmd.args([
            "--proc", "/proc", "--dev", "/dev", "--size", TMP_BYTES, "--tmpfs", "/tmp",
        ]);
        cmd.arg("--bind").arg(&spec.workspace).arg(WORKSPACE);
        for mount in &spec.mounts {
            let how = if mount.writable {
                "--bind"
            } else {
                "--ro-bind"
            };
            cmd.arg(how).arg(&mount.host).arg(&mount.inside);
        }
        cmd.args(["--chdir", &spec.cwd, "--clearenv"]);
        let has = |name: &str| spec.env.iter().any(|(k, _)| k == name);
        let defaults = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("HOME", WORKSPACE),
            ("LANG", "C.UTF-8"),
        ];
        for (name, value) in defaults {
            if !has(name) {
                cmd.args(["--setenv", name, value]);
            }
        }
        for (name, value) in &spec.env {
            cmd.args(["--setenv", name, value]);
        }
        cmd.arg("--").args(&spec.argv);
        cmd.env_clear();
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd.process_group(0);
        cmd
    }
}

/// Why a volume's `mount_path` is refused, if it is: it must be absolute,
/// plain (no `.`, `..` or empty parts) and not a place the jail or its
/// programs need (`/`, `/proc`, `/dev`, `/usr`, `/etc`, `/tmp`...).
pub fn check_mount_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must be an absolute path");
    }
    let parts: Vec<&str> = path[1..].split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err("must be a plain path, without empty, . or .. parts");
    }
    if path.len() > 255 || path.chars().any(|c| c.is_control()) {
        return Err("must be at most 255 characters, without control characters");
    }
    let top = format!("/{}", parts[0]);
    let reserved = ["/proc", "/dev", "/sys", "/tmp", "/usr", "/etc", "/run"];
    if reserved.contains(&top.as_str()) || LINKED.contains(&top.as_str()) {
        return Err("is a system directory of the sandbox");
    }
    if path == WORKSPACE {
        return Err("is the workspace itself; mount below it or elsewhere");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_plain_and_outside_system_directories() {
        for ok in ["/data", "/workspace/cache", "/mnt/models", "/var/lib/app"] {
            assert!(check_mount_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/",
            "",
            "data",
            "/proc",
            "/proc/self",
            "/dev/shm",
            "/usr/local",
            "/etc",
            "/bin",
            "/data/../etc",
            "/data/./x",
            "/data//x",
            "/data/",
            "/workspace",
            "/data\n",
        ] {
            assert!(check_mount_path(bad).is_err(), "{bad:?}");
        }
    }
}
