//! Network namespaces for jailed processes: one per sandbox and one per
//! runtime instance, with a loopback and nothing else.
//!
//! What a namespace reaches of the host are *forwards*: a listener on the
//! namespace's `127.0.0.1:PORT` whose connections mds carries to the
//! host's `127.0.0.1:PORT`, for the ports of the environment's data
//! services. The URLs a process is given are the host's, and they work
//! unchanged inside. Any other port of the loopback is refused at once
//! (nothing listens there), and no route leaves the namespace unless its
//! project allows egress ([`NetNs::allow_egress`]).
//!
//! A namespace is made and held by a thread of mds that lives in it (never
//! a thread of the async runtime, whose threads stay in the host's
//! namespace). That thread opens the sockets mds needs inside: the
//! forwards' listeners, and the router's connections to an instance.
//! Nothing is named or mounted by default, so when mds dies its namespaces
//! die with it.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use nix::sched::CloneFlags;
use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

type Job = Box<dyn FnOnce() + Send>;

/// Bytes a forward buffers per direction of a connection.
const FORWARD_BUFFER: usize = 64 << 10;

/// One network namespace, alive while this value is (and while any
/// process is in it).
pub struct NetNs {
    /// `/proc/<pid>/task/<tid>/ns/net` of the thread that holds it: what
    /// `nsenter` and `pasta` enter.
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    /// The forwarded ports and their accept loops.
    forwards: Mutex<BTreeMap<u16, AbortHandle>>,
    /// The egress helper, when the namespace may reach outside.
    egress: Mutex<Option<crate::egress::Egress>>,
    /// Whether the rules refusing private ranges are in place (they stay
    /// when egress is taken away and given again).
    pub(crate) refusing_private: std::sync::atomic::AtomicBool,
    /// Held while egress is given or taken, so two boots at once start one
    /// pasta.
    pub(crate) egress_change: tokio::sync::Mutex<()>,
}

fn gone() -> io::Error {
    io::Error::other("the network namespace's thread has ended")
}

impl NetNs {
    /// Makes a namespace with its loopback up. Needs `CAP_SYS_ADMIN` (mds
    /// runs as root); the error says so otherwise.
    pub async fn new() -> io::Result<Arc<Self>> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("mds-netns".into())
            .stack_size(256 << 10)
            .spawn(move || {
                let made = (|| -> io::Result<PathBuf> {
                    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
                        io::Error::other(format!(
                            "making a network namespace (this needs root): {e}"
                        ))
                    })?;
                    loopback_up()?;
                    Ok(PathBuf::from(format!(
                        "/proc/{}/task/{}/ns/net",
                        std::process::id(),
                        nix::unistd::gettid()
                    )))
                })();
                let ok = made.is_ok();
                let _ = ready_tx.send(made);
                if ok {
                    // Until the namespace is dropped (its sender with it).
                    for job in queue {
                        job();
                    }
                }
            })?;
        let path = ready_rx.await.map_err(|_| gone())??;
        Ok(Arc::new(Self {
            path,
            jobs,
            forwards: Mutex::default(),
            egress: Mutex::default(),
            refusing_private: Default::default(),
            egress_change: Default::default(),
        }))
    }

    /// The namespace as a path another process can enter.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `/proc/<pid>/task/<tid>` of the thread in the namespace: its
    /// `net/` files show the namespace's interfaces and routes.
    pub fn thread_dir(&self) -> PathBuf {
        self.path
            .parent()
            .and_then(Path::parent)
            .map_or_else(PathBuf::new, Path::to_path_buf)
    }

    /// Runs `job` on the thread in the namespace: the sockets it opens are
    /// the namespace's.
    async fn inside<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(job());
            }))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Opens a connection to `127.0.0.1:port` inside the namespace (the
    /// router to an instance, the health probe).
    pub async fn connect(&self, port: u16) -> io::Result<TcpStream> {
        let stream = self
            .inside(move || {
                // Loopback connects complete (or are refused) at once.
                let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
                stream.set_nonblocking(true)?;
                Ok(stream)
            })
            .await?;
        TcpStream::from_std(stream)
    }

    /// Makes the forwarded ports exactly `ports`: new ones start listening
    /// inside, ports no longer named stop (connections already carried go
    /// on until they end).
    pub async fn forward(&self, ports: &[u16]) -> io::Result<()> {
        let missing: Vec<u16> = {
            let mut forwards = self.forwards.lock().unwrap_or_else(|e| e.into_inner());
            forwards.retain(|port, task| {
                let keep = ports.contains(port);
                if !keep {
                    task.abort();
                }
                keep
            });
            ports
                .iter()
                .copied()
                .filter(|p| !forwards.contains_key(p))
                .collect()
        };
        for port in missing {
            let listener = self
                .inside(move || {
                    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
                    listener.set_nonblocking(true)?;
                    Ok(listener)
                })
                .await?;
            let listener = TcpListener::from_std(listener)?;
            let task = tokio::spawn(carry(listener, port)).abort_handle();
            let mut forwards = self.forwards.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = forwards.insert(port, task) {
                old.abort();
            }
        }
        Ok(())
    }

    /// The forwarded ports.
    pub fn forwarded(&self) -> Vec<u16> {
        self.forwards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Adds routing rules inside: `(net, prefix length, priority,
    /// action)` each.
    pub(crate) async fn add_rules(
        &self,
        rules: Vec<([u8; 4], u8, u32, RuleAction)>,
    ) -> io::Result<()> {
        self.inside(move || {
            for (net, len, priority, action) in rules {
                add_rule(net, len, priority, action)?;
            }
            Ok(())
        })
        .await
    }

    /// Gives the namespace a route out, through `egress` (kept until the
    /// namespace is dropped).
    pub(crate) fn set_egress(&self, egress: crate::egress::Egress) {
        *self.egress.lock().unwrap_or_else(|e| e.into_inner()) = Some(egress);
    }

    /// Takes the namespace's route out away (pasta ends).
    pub(crate) fn clear_egress(&self) {
        *self.egress.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether the namespace has a route out.
    pub fn has_egress(&self) -> bool {
        self.egress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        for task in self
            .forwards
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            task.abort();
        }
    }
}

/// Accepts connections on a forward's listener and carries each to the
/// host's `127.0.0.1:port`.
async fn carry(listener: TcpListener, port: u16) {
    loop {
        let inside = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors, say: wait rather than spin.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            // A service that is down closes the connection at once.
            let Ok(mut host) = TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            let mut inside = inside;
            let _ = inside.set_nodelay(true);
            let _ = host.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut inside,
                &mut host,
                FORWARD_BUFFER,
                FORWARD_BUFFER,
            )
            .await;
        });
    }
}

/// Sets the namespace's `lo` (index 1 in a new namespace) up, as `ip
/// link set lo up` does.
fn loopback_up() -> io::Result<()> {
    const RTM_NEWLINK: u16 = 16;
    const IFF_UP: u32 = 1;
    let mut ifinfomsg = Vec::with_capacity(16);
    ifinfomsg.extend_from_slice(&[0, 0]); // ifi_family AF_UNSPEC, pad
    ifinfomsg.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    ifinfomsg.extend_from_slice(&1i32.to_ne_bytes()); // ifi_index: lo
    ifinfomsg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    ifinfomsg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    rtnetlink(RTM_NEWLINK, 0, &ifinfomsg)
}

/// What a routing rule does with the destinations it matches.
#[derive(Clone, Copy)]
pub(crate) enum RuleAction {
    /// Looks them up in the main table (an exception to a refusal).
    Route,
    /// Refuses them: a connection fails at once, nothing is sent.
    Prohibit,
}

/// Adds an IPv4 routing rule (`ip rule add to NET/LEN ... pref PRIORITY`)
/// in the calling thread's namespace.
fn add_rule(net: [u8; 4], len: u8, priority: u32, action: RuleAction) -> io::Result<()> {
    const RTM_NEWRULE: u16 = 32;
    const NLM_F_CREATE: u16 = 0x400;
    const NLM_F_EXCL: u16 = 0x200;
    const AF_INET: u8 = 2;
    const RT_TABLE_MAIN: u8 = 254;
    const FR_ACT_TO_TBL: u8 = 1;
    const FR_ACT_PROHIBIT: u8 = 8;
    const FRA_DST: u16 = 1;
    const FRA_PRIORITY: u16 = 6;
    let (table, action) = match action {
        RuleAction::Route => (RT_TABLE_MAIN, FR_ACT_TO_TBL),
        RuleAction::Prohibit => (0, FR_ACT_PROHIBIT),
    };
    // fib_rule_hdr: family, dst_len, src_len, tos, table, 2 reserved,
    // action, flags (u32).
    let mut body = vec![AF_INET, len, 0, 0, table, 0, 0, action];
    body.extend_from_slice(&0u32.to_ne_bytes());
    for (kind, value) in [(FRA_DST, net), (FRA_PRIORITY, priority.to_ne_bytes())] {
        body.extend_from_slice(&8u16.to_ne_bytes()); // rta_len
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(&value);
    }
    rtnetlink(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, &body)
}

/// Sends one rtnetlink request (`kind`, with `flags` besides request and
/// ack) from the calling thread's namespace, and reads the kernel's
/// answer.
fn rtnetlink(kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLMSG_ERROR: u16 = 2;
    let netlink = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&netlink);
    bind(fd, &NetlinkAddr::new(0, 0))?;
    let length = 16 + body.len() as u32;
    let mut message = Vec::with_capacity(length as usize);
    message.extend_from_slice(&length.to_ne_bytes());
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // seq
    message.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    message.extend_from_slice(body);
    send(fd, &message, MsgFlags::empty())?;
    let mut answer = [0u8; 512];
    let n = recv(fd, &mut answer, MsgFlags::empty())?;
    // nlmsghdr (16 bytes), then nlmsgerr's `error` (0: done).
    if n < 20 || u16::from_ne_bytes([answer[4], answer[5]]) != NLMSG_ERROR {
        return Err(io::Error::other("netlink gave no answer"));
    }
    match i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]) {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(-errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[tokio::test]
    async fn a_namespace_reaches_only_its_forwards() {
        if !root() {
            eprintln!("skipped: network namespaces need root");
            return;
        }
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Two services on the host's loopback; one is forwarded.
        let shared = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let other = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let shared_port = shared.local_addr().unwrap().port();
        let other_port = other.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = shared.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let ns = NetNs::new().await.unwrap();
        assert_ne!(
            std::fs::read_link(ns.path()).unwrap(),
            std::fs::read_link("/proc/self/ns/net").unwrap()
        );
        ns.forward(&[shared_port]).await.unwrap();
        assert_eq!(ns.forwarded(), vec![shared_port]);
        let mut through = ns.connect(shared_port).await.unwrap();
        through.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        through.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        let refused = ns.connect(other_port).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        // Dropping a port from the list stops its listener.
        ns.forward(&[]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let refused = ns.connect(shared_port).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }
}
