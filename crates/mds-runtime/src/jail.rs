//! The isolation backend: bubblewrap.
//!
//! A jailed command gets a root of its own: the host's `/usr` read-only
//! (with the usual `/bin`, `/lib`... links), a minimal `/etc`, fresh
//! `/proc`, `/dev` and `/tmp`, and its workspace at `/workspace`, the
//! only writable place besides mounted volumes. It runs in its own user,
//! pid, ipc and uts namespaces, as an unprivileged account, with exactly
//! the environment it was given. Its network is what [`Network`] says:
//! a namespace of its sandbox's (see `netns`), or none at all. Nothing
//! else of the host (the mds data dir, other workspaces, `/root`,
//! `/home`, the rest of `/etc`) exists inside.

use std::path::{Path, PathBuf};

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error(
        "bubblewrap (bwrap) is not installed; install it with `apt-get install -y bubblewrap` \
         (scripts/install-deps does)"
    )]
    NoBubblewrap,
    #[error("preparing the jail's /etc in {0}: {1}")]
    Etc(String, std::io::Error),
}

/// Where jailed processes find their workspace.
pub const WORKSPACE: &str = "/workspace";

/// The size of a jail's `/tmp` (memory).
const TMP_BYTES: &str = "268435456";

/// Host directories the jail sees read-only: programs, nothing with data
/// in it.
const READ_ONLY: &[&str] = &["/usr"];
/// What the jail's `/etc` shows of the host's, where the host has it: CA
/// certificates, the dynamic linker's cache, Debian's alternatives links
/// (`awk`, `editor`...), psql's wrapper configuration, and locale, time
/// zone and protocol data. No account, key or host configuration.
const HOST_ETC: &[&str] = &[
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "gai.conf",
    "host.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "mime.types",
    "os-release",
    "postgresql-common",
    "protocols",
    "python3",
    "python3.11",
    "services",
    "ssl",
    "timezone",
];
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

/// What network a jailed command is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// None at all: a loopback of its own (bubblewrap's `--unshare-net`).
    Nothing,
    /// The network namespace at this path (entered with `nsenter`).
    Namespace(PathBuf),
    /// The host's: only when mds cannot make namespaces (it does not run
    /// as root).
    Host,
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
    pub network: Network,
}

#[derive(Debug, Clone)]
pub struct Jail {
    bwrap: PathBuf,
    nsenter: Option<PathBuf>,
    /// The generated files of the jail's `/etc`.
    etc: PathBuf,
    /// The account jailed processes run as when mds runs as root.
    user: Option<(u32, u32)>,
}

impl Jail {
    /// Finds bubblewrap, and writes the jail's own `/etc` files under
    /// `state` (a directory of mds's). `user` is the (uid, gid) to drop to
    /// when mds runs as root (bubblewrap then needs unprivileged user
    /// namespaces, which Debian's kernels allow).
    pub fn find(user: Option<(u32, u32)>, state: &Path) -> Result<Self, JailError> {
        let bwrap = find_program("bwrap").ok_or(JailError::NoBubblewrap)?;
        let etc = state.join("etc");
        write_etc(&etc, user).map_err(|e| JailError::Etc(etc.display().to_string(), e))?;
        Ok(Self {
            bwrap,
            nsenter: find_program("nsenter"),
            etc,
            user,
        })
    }

    /// The account jailed processes run as, if mds drops to one.
    pub fn user(&self) -> Option<(u32, u32)> {
        self.user
    }

    /// The bubblewrap command line for `spec`; the caller spawns it (in a
    /// process group of its own, so that killing the group ends it all).
    pub fn command(&self, spec: &Spec) -> Command {
        // nsenter enters the namespace as root, then drops to the
        // account and runs bubblewrap; elsewhere the spawn drops.
        let mut cmd = match (&spec.network, &self.nsenter) {
            (Network::Namespace(path), Some(nsenter)) => {
                let mut cmd = Command::new(nsenter);
                cmd.arg(format!("--net={}", path.display()));
                if let Some((uid, gid)) = self.user {
                    cmd.arg(format!("--setuid={uid}"))
                        .arg(format!("--setgid={gid}"));
                }
                cmd.arg("--").arg(&self.bwrap);
                cmd
            }
            _ => {
                let mut cmd = Command::new(&self.bwrap);
                if let Some((uid, gid)) = self.user {
                    cmd.uid(uid).gid(gid);
                }
                cmd
            }
        };
        if matches!(spec.network, Network::Nothing)
            || (matches!(spec.network, Network::Namespace(_)) && self.nsenter.is_none())
        {
            // A namespace that cannot be entered is no network at all.
            cmd.arg("--unshare-net");
        }
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
        for name in ["passwd", "group", "hosts", "nsswitch.conf", "resolv.conf"] {
            cmd.arg("--ro-bind")
                .arg(self.etc.join(name))
                .arg(format!("/etc/{name}"));
        }
        for name in HOST_ETC {
            let path = format!("/etc/{name}");
            cmd.args(["--ro-bind-try", &path, &path]);
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
        cmd.process_group(0);
        cmd
    }
}

/// `name` on the PATH, or in `/usr/bin` or `/usr/sbin`.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Writes the files of the jail's `/etc` that are its own: the accounts
/// (root and the one commands run as, named `sandbox`), the loopback's
/// names, name-service order, and the resolver (pasta's DNS forward, for
/// namespaces with egress).
fn write_etc(dir: &Path, user: Option<(u32, u32)>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let (uid, gid) = user.unwrap_or_else(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    });
    let mut passwd = String::from("root:x:0:0:root:/root:/usr/sbin/nologin\n");
    let mut group = String::from("root:x:0:\n");
    if uid != 0 {
        passwd.push_str(&format!(
            "sandbox:x:{uid}:{gid}:sandbox:{WORKSPACE}:/bin/sh\n"
        ));
        group.push_str(&format!("sandbox:x:{gid}:\n"));
    }
    let files = [
        ("passwd", passwd),
        ("group", group),
        (
            "hosts",
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             127.0.1.1\tsandbox\n"
                .to_string(),
        ),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n\
             networks: files\nprotocols: files\nservices: files\n"
                .to_string(),
        ),
        (
            "resolv.conf",
            format!(
                "nameserver {}\noptions timeout:2 attempts:2\n",
                crate::egress::DNS_FORWARD
            ),
        ),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
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
