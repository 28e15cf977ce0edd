//! A namespace's route out, for projects with `network_egress: allow`:
//! `pasta` (Debian's `passt`) gives the namespace an interface whose
//! traffic it sends on from ordinary sockets of the host, a NAT in user
//! space. The host's own namespace is never shared, and no forwarding or
//! firewall setting of the host changes.
//!
//! Before pasta starts, the namespace gets routing rules that refuse the
//! private, shared, link-local and multicast ranges (the cloud metadata
//! address 169.254.169.254 among them): a connection there fails at once
//! inside, and nothing is sent. DNS goes to [`DNS_FORWARD`], which pasta
//! answers from the host's resolver.
//!
//! pasta needs the namespace as a path it can open after it drops its
//! privileges: mds bind-mounts it under its data directory for as long as
//! the egress lives. After a crash, [`Egress::sweep`] ends what is left.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tokio::process::{Child, Command};

use crate::netns::{NetNs, RuleAction};

/// Where DNS queries go inside a namespace with egress; pasta forwards
/// them to the host's resolver.
pub const DNS_FORWARD: &str = "169.254.0.53";

/// Destinations refused inside a namespace with egress (besides its own
/// loopback, which the forwards own).
const REFUSED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// A running pasta for one namespace; dropping it ends pasta and removes
/// the namespace's mount.
pub struct Egress {
    pasta: Child,
    mount: PathBuf,
}

impl Drop for Egress {
    fn drop(&mut self) {
        let _ = self.pasta.start_kill();
        unmount(&self.mount);
    }
}

fn unmount(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// A program egress needs.
fn program(name: &str) -> io::Result<PathBuf> {
    crate::jail::find_program(name).ok_or_else(|| {
        io::Error::other(format!(
            "`{name}` is not installed; egress needs `apt-get install -y passt` \
             (scripts/install-deps does)"
        ))
    })
}

/// Whether the host has an IPv4 default route (egress is pointless
/// without, and pasta copies it).
pub fn host_has_route() -> bool {
    has_default_route(Path::new("/proc/self/net/route"))
}

/// Whether a `/proc/.../net/route` table has a default route.
fn has_default_route(table: &Path) -> bool {
    std::fs::read_to_string(table).is_ok_and(|table| {
        table
            .lines()
            .skip(1)
            .any(|line| line.split_whitespace().nth(1) == Some("00000000"))
    })
}

impl Egress {
    /// Gives `ns` a route out. `mounts` is a directory of mds's own where
    /// the namespace is mounted for pasta, as `name`.
    pub async fn start(ns: &NetNs, mounts: &Path, name: &str) -> io::Result<()> {
        let pasta = program("pasta")?;
        if !ns.refusing_private.load(Ordering::SeqCst) {
            refuse_private(ns).await?;
            ns.refusing_private.store(true, Ordering::SeqCst);
        }
        std::fs::create_dir_all(mounts)?;
        let target = mounts.join(name);
        std::fs::File::create(&target)?;
        mount(
            Some(ns.path()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            unmount(&target);
            io::Error::other(format!("mounting the namespace for pasta: {e}"))
        })?;
        let child = Command::new(pasta)
            .arg("--foreground")
            .args(["--quiet", "--runas", "0", "--netns"])
            .arg(&target)
            // No port of the host is forwarded in (the default forwards
            // every listening one), and the gateway is not the host.
            .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
            .args(["--no-map-gw", "--ipv4-only", "--config-net"])
            .args(["--dns-forward", DNS_FORWARD])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                unmount(&target);
                return Err(io::Error::other(format!("starting pasta: {e}")));
            }
        };
        // Ready when the namespace has its default route.
        let routes = ns.thread_dir().join("net/route");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut why = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = stderr.read_to_string(&mut why).await;
                }
                unmount(&target);
                return Err(io::Error::other(format!(
                    "pasta ended ({status}): {}",
                    why.trim()
                )));
            }
            if has_default_route(&routes) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                unmount(&target);
                return Err(io::Error::other("pasta did not configure the namespace"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ns.set_egress(Egress {
            pasta: child,
            mount: target,
        });
        Ok(())
    }

    /// Ends the pastas and mounts a previous run of mds left under
    /// `mounts` (it was killed).
    pub fn sweep(mounts: &Path) {
        let Ok(entries) = std::fs::read_dir(mounts) else {
            return;
        };
        let prefix = mounts.to_string_lossy().into_owned();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for entry in procs.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let ours = cmdline
                    .split(|b| *b == 0)
                    .any(|arg| arg.starts_with(prefix.as_bytes()));
                if ours {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        for entry in entries.flatten() {
            unmount(&entry.path());
        }
    }
}

/// Adds the rules that refuse [`REFUSED`] (except [`DNS_FORWARD`]) inside
/// `ns`, over rtnetlink from its own thread.
async fn refuse_private(ns: &NetNs) -> io::Result<()> {
    let parse = |net: &str| -> io::Result<([u8; 4], u8)> {
        let (addr, len) = net.split_once('/').unwrap_or((net, "32"));
        let addr: std::net::Ipv4Addr = addr
            .parse()
            .map_err(|e| io::Error::other(format!("{net}: {e}")))?;
        let len = len
            .parse()
            .map_err(|e| io::Error::other(format!("{net}: {e}")))?;
        Ok((addr.octets(), len))
    };
    let (dns, _) = parse(DNS_FORWARD)?;
    let mut rules = vec![(dns, 32, 50, RuleAction::Route)];
    for range in REFUSED {
        let (net, len) = parse(range)?;
        rules.push((net, len, 100, RuleAction::Prohibit));
    }
    ns.add_rules(rules)
        .await
        .map_err(|e| io::Error::other(format!("refusing private ranges: {e}")))
}
