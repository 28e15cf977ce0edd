//! Sandboxes on this host: a workspace directory each, and the jailed
//! commands running in it. A command runs in a process group of its own,
//! remembered until it ends, so that stopping or destroying a sandbox ends
//! every process in it. bubblewrap dies with mds (`--die-with-parent`), and
//! its pid namespace with it, so a crash of mds leaves no process behind.
//!
//! Each workspace has a network namespace of its own (`netns`) when mds
//! runs as root: its commands reach the ports it was connected to
//! ([`Sandboxes::connect_services`]) and, if allowed, the outside. Packing
//! and unpacking releases run with no network at all.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{chown, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::egress::{host_has_route, Egress};
use crate::jail::{Jail, JailError, Mount, Network, Spec, WORKSPACE};
use crate::netns::NetNs;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Jail(#[from] JailError),
    #[error("{0}")]
    Io(String),
}

/// Where, under the sandboxes' root, namespaces with egress are mounted
/// for pasta.
const EGRESS_MOUNTS: &str = ".netns";

/// Output kept per stream of a command (beyond it, the rest is dropped
/// and the result says so).
pub const MAX_CAPTURE: usize = 8 << 20;

/// A piece of a running command's output, for streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(String),
    Stderr(String),
}

#[derive(Debug, Default)]
pub struct Finished {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub duration_ms: u64,
    pub timed_out: bool,
    pub truncated: bool,
}

/// One command to run in a sandbox.
pub struct Command<'a> {
    pub env: Vec<(String, String)>,
    /// Relative paths are under `/workspace`.
    pub cwd: Option<&'a str>,
    pub command: &'a str,
    pub timeout: Duration,
    pub mounts: Vec<Mount>,
    /// In the workspace's network (else in none).
    pub networked: bool,
}

pub struct Sandboxes {
    jail: Result<Jail, JailError>,
    root: PathBuf,
    /// Process groups of running commands, by sandbox.
    running: Arc<Mutex<HashMap<String, HashSet<i32>>>>,
    /// Network namespaces, by workspace.
    networks: Mutex<HashMap<String, Arc<NetNs>>>,
    /// Whether workspaces get network namespaces: mds runs as root.
    isolated: bool,
}

impl Sandboxes {
    /// Sandboxes under `root` (created `0701`: jailed users pass through,
    /// nobody lists it). `user` is the account commands run as when mds
    /// runs as root. With `isolate` (and as root), each workspace gets a
    /// network namespace of its own. What a previous run left of its
    /// egress helpers ends.
    pub fn new(root: &Path, user: Option<(u32, u32)>, isolate: bool) -> Result<Self, SandboxError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o701)
            .create(root)
            .map_err(|e| SandboxError::Io(format!("creating {}: {e}", root.display())))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o701))
            .map_err(|e| SandboxError::Io(format!("chmod {}: {e}", root.display())))?;
        let isolated = isolate && nix::unistd::geteuid().is_root();
        if nix::unistd::geteuid().is_root() {
            Self::end_leftovers(root);
        }
        Ok(Self {
            jail: Jail::find(user, &root.join(".jail")),
            root: root.to_path_buf(),
            running: Arc::default(),
            networks: Mutex::default(),
            isolated,
        })
    }

    /// Ends what a killed run of mds left of the egress helpers under
    /// `root`, and their mounts.
    pub fn end_leftovers(root: &Path) {
        Egress::sweep(&root.join(EGRESS_MOUNTS));
    }

    /// Whether each workspace has a network of its own.
    pub fn isolated(&self) -> bool {
        self.isolated
    }

    /// The network namespace of workspace `id`, made on first use; `None`
    /// when mds cannot make namespaces.
    async fn network(&self, id: &str) -> Result<Option<Arc<NetNs>>, SandboxError> {
        if !self.isolated {
            return Ok(None);
        }
        if let Some(ns) = self.existing_network(id) {
            return Ok(Some(ns));
        }
        let ns = NetNs::new()
            .await
            .map_err(|e| SandboxError::Io(e.to_string()))?;
        // Another caller may have made one meanwhile: the first stays.
        Ok(Some(
            self.networks
                .lock()
                .expect("never poisoned")
                .entry(id.to_string())
                .or_insert(ns)
                .clone(),
        ))
    }

    fn existing_network(&self, id: &str) -> Option<Arc<NetNs>> {
        self.networks
            .lock()
            .expect("never poisoned")
            .get(id)
            .cloned()
    }

    /// Sets what workspace `id`'s processes reach: the host's loopback
    /// `ports` (its data services, at the addresses its variables name)
    /// and, with `egress`, the outside (when the host has a route).
    pub async fn connect_services(
        &self,
        id: &str,
        ports: &[u16],
        egress: bool,
    ) -> Result<(), SandboxError> {
        let Some(ns) = self.network(id).await? else {
            return Ok(());
        };
        ns.forward(ports)
            .await
            .map_err(|e| SandboxError::Io(format!("forwarding a service port: {e}")))?;
        let egress = egress && host_has_route();
        let _one_change = ns.egress_change.lock().await;
        if egress && !ns.has_egress() {
            Egress::start(&ns, &self.root.join(EGRESS_MOUNTS), id)
                .await
                .map_err(|e| SandboxError::Io(format!("giving the sandbox egress: {e}")))?;
        } else if !egress && ns.has_egress() {
            ns.clear_egress();
        }
        Ok(())
    }

    /// The host ports workspace `id` reaches, and whether it reaches the
    /// outside.
    pub fn reach(&self, id: &str) -> Option<(Vec<u16>, bool)> {
        self.existing_network(id)
            .map(|ns| (ns.forwarded(), ns.has_egress()))
    }

    /// A connection to `127.0.0.1:port` as workspace `id`'s processes see
    /// it (an instance's own port, for the router and the health probe).
    pub async fn connect(&self, id: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        match (self.isolated, self.existing_network(id)) {
            (false, _) => tokio::net::TcpStream::connect(("127.0.0.1", port)).await,
            (true, Some(ns)) => ns.connect(port).await,
            (true, None) => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{id} has no network"),
            )),
        }
    }

    /// How a networked command of workspace `id` is jailed; the namespace
    /// is returned too, to be held until the command has started.
    async fn networked(&self, id: &str) -> Result<(Network, Option<Arc<NetNs>>), SandboxError> {
        Ok(match self.network(id).await? {
            Some(ns) => (Network::Namespace(ns.path().to_path_buf()), Some(ns)),
            None => (Network::Host, None),
        })
    }

    /// Whether sandboxes can run here (bubblewrap is installed).
    pub fn available(&self) -> Result<&Jail, &JailError> {
        self.jail.as_ref()
    }

    pub fn workspace(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Makes the sandbox's workspace, owned by the account it runs as.
    pub fn prepare(&self, id: &str) -> Result<(), SandboxError> {
        let jail = self
            .jail
            .as_ref()
            .map_err(|e| SandboxError::Io(e.to_string()))?;
        let dir = self.workspace(id);
        let io = |what: &str, e: std::io::Error| {
            SandboxError::Io(format!("{what} {}: {e}", dir.display()))
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| io("creating", e))?;
        if let Some((uid, gid)) = jail.user() {
            chown(&dir, Some(uid), Some(gid)).map_err(|e| io("chown", e))?;
        }
        Ok(())
    }

    /// Runs `command` under `/bin/sh -c` in the sandbox; output goes to
    /// `events` as it comes when given, and is collected otherwise.
    pub async fn run(
        &self,
        id: &str,
        command: Command<'_>,
        events: Option<mpsc::Sender<Output>>,
    ) -> Result<Finished, SandboxError> {
        let jail = self
            .jail
            .as_ref()
            .map_err(|e| SandboxError::Io(e.to_string()))?;
        let (network, _held) = match command.networked {
            true => self.networked(id).await?,
            false => (Network::Nothing, None),
        };
        let mut cmd = jail.command(&self.spec(
            id,
            command.env,
            command.cwd,
            vec!["/bin/sh".into(), "-c".into(), command.command.into()],
            command.mounts,
            network,
        ));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let began = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| SandboxError::Io(format!("starting bubblewrap: {e}")))?;
        let pgid = child.id().map(|p| p as i32);
        let _guard = pgid.map(|pgid| self.track(id, pgid));

        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let out_task = tokio::spawn(pump(stdout, events.clone(), Output::Stdout));
        let err_task = tokio::spawn(pump(stderr, events, Output::Stderr));
        let (status, timed_out) = match tokio::time::timeout(command.timeout, child.wait()).await {
            Ok(status) => (status.ok(), false),
            Err(_) => {
                if let Some(pgid) = pgid {
                    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                }
                (child.wait().await.ok(), true)
            }
        };
        // The group may hold processes that outlive the shell; they end
        // with the command.
        if let Some(pgid) = pgid {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        let (stdout, out_cut) = out_task.await.unwrap_or_default();
        let (stderr, err_cut) = err_task.await.unwrap_or_default();
        let exit_code = if timed_out {
            124
        } else {
            status
                .and_then(|s| {
                    s.code().or_else(|| {
                        std::os::unix::process::ExitStatusExt::signal(&s).map(|n| 128 + n)
                    })
                })
                .unwrap_or(-1)
        };
        Ok(Finished {
            stdout,
            stderr,
            exit_code,
            duration_ms: began.elapsed().as_millis() as u64,
            timed_out,
            truncated: out_cut || err_cut,
        })
    }

    fn spec(
        &self,
        id: &str,
        env: Vec<(String, String)>,
        cwd: Option<&str>,
        argv: Vec<String>,
        mounts: Vec<Mount>,
        network: Network,
    ) -> Spec {
        let cwd = match cwd {
            None | Some("") => WORKSPACE.to_string(),
            Some(path) if path.starts_with('/') => path.to_string(),
            Some(path) => format!("{WORKSPACE}/{path}"),
        };
        Spec {
            workspace: self.workspace(id),
            env,
            cwd,
            argv,
            mounts,
            network,
        }
    }

    /// Starts `argv` jailed over the workspace `id` and returns at once: a
    /// long-running process (a runtime instance) or one whose output or
    /// input the caller streams (packing and unpacking releases). It is
    /// tracked like a command, so [`Sandboxes::kill_all`] ends it.
    pub async fn spawn(&self, id: &str, spawn: Spawn) -> Result<Process, SandboxError> {
        let jail = self
            .jail
            .as_ref()
            .map_err(|e| SandboxError::Io(e.to_string()))?;
        let (network, _held) = match spawn.networked {
            true => self.networked(id).await?,
            false => (Network::Nothing, None),
        };
        let mut cmd =
            jail.command(&self.spec(id, spawn.env, None, spawn.argv, spawn.mounts, network));
        let piped = |yes: bool| if yes { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(piped(spawn.stdin))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| SandboxError::Io(format!("starting bubblewrap: {e}")))?;
        let pgid = child.id().map(|p| p as i32);
        let tracked = pgid.map(|pgid| self.track(id, pgid));
        Ok(Process {
            child,
            pgid,
            _tracked: tracked,
        })
    }

    fn track(&self, id: &str, pgid: i32) -> Tracked {
        self.running
            .lock()
            .expect("never poisoned")
            .entry(id.to_string())
            .or_default()
            .insert(pgid);
        Tracked {
            running: self.running.clone(),
            id: id.to_string(),
            pgid,
        }
    }

    /// How many commands run in a sandbox now.
    pub fn running(&self, id: &str) -> usize {
        self.running
            .lock()
            .expect("never poisoned")
            .get(id)
            .map_or(0, HashSet::len)
    }

    /// Ends every process of a sandbox.
    pub fn kill_all(&self, id: &str) {
        let groups: Vec<i32> = self
            .running
            .lock()
            .expect("never poisoned")
            .get(id)
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default();
        for pgid in groups {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }

    /// Ends every process of every sandbox (mds is stopping).
    pub fn kill_every(&self) {
        let groups: Vec<i32> = self
            .running
            .lock()
            .expect("never poisoned")
            .values()
            .flatten()
            .copied()
            .collect();
        for pgid in groups {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }

    /// Lets go of workspace `id`'s network (its egress helper ends): it
    /// is stopped, and its next boot makes a new one.
    pub fn disconnect(&self, id: &str) {
        self.networks.lock().expect("never poisoned").remove(id);
    }

    /// Ends a sandbox's processes and network, and removes its workspace.
    pub async fn remove(&self, id: &str) -> Result<(), SandboxError> {
        self.kill_all(id);
        self.networks.lock().expect("never poisoned").remove(id);
        let dir = self.workspace(id);
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(SandboxError::Io(format!("removing {}: {e}", dir.display())))
            }
            _ => Ok(()),
        })
        .await
        .map_err(|e| SandboxError::Io(e.to_string()))?
    }
}

/// What [`Sandboxes::spawn`] starts.
pub struct Spawn {
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
    pub mounts: Vec<Mount>,
    /// Whether the caller writes to its stdin (else it reads nothing).
    pub stdin: bool,
    /// In the workspace's network (else in none: packing a release).
    pub networked: bool,
}

/// A started jailed process: stdout and stderr are piped.
pub struct Process {
    pub child: tokio::process::Child,
    pub pgid: Option<i32>,
    _tracked: Option<Tracked>,
}

impl Process {
    /// Sends `signal` to every process of its group.
    pub fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(Pid::from_raw(pgid), signal);
        }
    }
}

/// Sends a process's output, line by line, to `events` until it ends.
pub async fn forward_lines(
    stream: impl AsyncRead + Unpin,
    events: mpsc::Sender<Output>,
    wrap: fn(String) -> Output,
) {
    pump(stream, Some(events), wrap).await;
}

/// Forgets a command's process group when it ends.
struct Tracked {
    running: Arc<Mutex<HashMap<String, HashSet<i32>>>>,
    id: String,
    pgid: i32,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut running = self.running.lock().expect("never poisoned");
        if let Some(groups) = running.get_mut(&self.id) {
            groups.remove(&self.pgid);
            if groups.is_empty() {
                running.remove(&self.id);
            }
        }
    }
}

/// The longest line sent as one streaming event; longer ones are split.
const MAX_LINE: usize = 64 << 10;

/// Reads a stream in bounded pieces: sends lines (split past
/// [`MAX_LINE`]) to `events` if given, else keeps up to [`MAX_CAPTURE`]
/// bytes and drops the rest as it arrives. Memory stays bounded whatever
/// the command writes. Returns (kept text, whether some was cut).
async fn pump(
    stream: impl AsyncRead + Unpin,
    events: Option<mpsc::Sender<Output>>,
    wrap: fn(String) -> Output,
) -> (String, bool) {
    let mut reader = BufReader::new(stream);
    let mut kept = Vec::new();
    let mut cut = false;
    let mut line = Vec::new();
    loop {
        let buffer = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buffer) => buffer,
        };
        let n = buffer.len();
        match &events {
            None => {
                let room = MAX_CAPTURE.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
                cut |= n > room;
            }
            Some(events) => {
                for &byte in buffer {
                    if byte != b'\n' {
                        line.push(byte);
                    }
                    if byte == b'\n' || line.len() >= MAX_LINE {
                        let text = String::from_utf8_lossy(&line).into_owned();
                        line.clear();
                        // A client that went away stops nothing: the command runs on.
                        let _ = events.send(wrap(text)).await;
                    }
                }
            }
        }
        reader.consume(n);
    }
    if let (Some(events), false) = (&events, line.is_empty()) {
        let _ = events
            .send(wrap(String::from_utf8_lossy(&line).into_owned()))
            .await;
    }
    (String::from_utf8_lossy(&kept).into_owned(), cut)
}
