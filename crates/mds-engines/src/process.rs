//! Helpers for supervised children and what they leave behind. A child runs
//! in its own process group, but a group is not a tree: PostgreSQL's
//! children each lead a session of their own, so killing the postmaster's
//! group leaves them running. These helpers find processes by parentage and
//! by working directory through /proc instead.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Sends `signal` to the whole group led by `pid`. Errors (the group is
/// already gone) are ignored: the goal is that nothing is left.
pub fn signal_group(pid: u32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), signal);
}

pub fn signal(pid: u32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
}

/// Whether `pid` still runs. A zombie does not: it holds no memory, files
/// or shared-memory attachment, and it may never be reaped when our pid 1
/// does not reap orphans.
pub fn is_alive(pid: u32) -> bool {
    if kill(Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    match stat(pid) {
        Some(stat) => stat.state != 'Z' && stat.state != 'X',
        // Still signalable but its stat unreadable: count it as alive.
        None => true,
    }
}

/// Asks `pid` to stop with `signal`, waits up to `grace`, then kills its
/// group. For processes that are not our children (left by an earlier run).
pub async fn stop_foreign(pid: u32, signal: Signal, grace: Duration) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
    let deadline = tokio::time::Instant::now() + grace;
    while is_alive(pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if is_alive(pid) {
        signal_group(pid, Signal::SIGKILL);
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// Kills `root` and every process descending from it, at once and without
/// a race: each round stops (SIGSTOP) the members not yet stopped, so no
/// member can fork a process that would escape to init, until a round
/// finds no new member; then all get SIGKILL (which ends stopped processes
/// too). The groups they lead are killed as well. Returns the pids killed.
pub fn kill_tree(root: u32) -> Vec<u32> {
    let mut stopped: HashSet<u32> = HashSet::new();
    // Bounded: a tree that keeps growing after this many rounds is killed
    // as far as it was found; the caller's sweep by other means follows.
    for _ in 0..20 {
        let members = tree(root);
        let new: Vec<u32> = members
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        for pid in new {
            signal(pid, Signal::SIGSTOP);
            stopped.insert(pid);
        }
    }
    for &pid in &stopped {
        signal_group(pid, Signal::SIGKILL);
        signal(pid, Signal::SIGKILL);
    }
    // The root's group, even when the root was already gone.
    signal_group(root, Signal::SIGKILL);
    stopped.into_iter().collect()
}

/// SIGKILLs `pids` and waits up to `limit` until none runs. Returns those
/// still running after that.
pub async fn kill_and_wait(pids: &[u32], limit: Duration) -> Vec<u32> {
    for &pid in pids {
        signal(pid, Signal::SIGKILL);
    }
    wait_gone(pids, limit).await
}

/// Waits up to `limit` until none of `pids` runs; returns those that do.
pub async fn wait_gone(pids: &[u32], limit: Duration) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| is_alive(*p)).collect();
        if alive.is_empty() || tokio::time::Instant::now() >= deadline {
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `root` (when alive) and its living descendants.
pub fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in all_pids() {
        if let Some(stat) = stat(pid) {
            if stat.state != 'Z' && stat.state != 'X' {
                children.entry(stat.ppid).or_default().push(pid);
            }
        }
    }
    let mut found = Vec::new();
    if is_alive(root) {
        found.push(root);
    }
    let mut queue = vec![root];
    let mut seen = HashSet::from([root]);
    while let Some(parent) = queue.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            if seen.insert(child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// Living processes whose working directory is `dir` and whose command
/// line contains `program`. A server that changes into its data directory
/// passes it to every process it forks, so this finds them all, even after
/// their parent died and they were re-parented to init.
pub fn processes_in(dir: &Path, program: &str) -> Vec<u32> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    all_pids()
        .filter(|&pid| {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            // A zombie has no cwd, so it never matches.
            std::fs::read_link(proc.join("cwd")).is_ok_and(|cwd| cwd == dir)
                && std::fs::read(proc.join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(program))
        })
        .collect()
}

fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

struct Stat {
    state: char,
    ppid: u32,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid })
}

/// The last `max` bytes of a log file, for error messages.
pub fn tail(path: &std::path::Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Raises this process's soft limit of open files to its hard limit and
/// returns the limit now in force. Children inherit it: the pooler holds a
/// socket per client, thousands at once.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// Starts `cmd` the way every supervised child runs: from `dir`, in a
/// process group of its own, stdin closed, stdout and stderr appended to
/// `log`, killed if its handle is dropped, and as `os_user` when given.
pub(crate) fn spawn_logged(
    mut cmd: tokio::process::Command,
    dir: &Path,
    log: &Path,
    os_user: Option<&crate::OsUser>,
    what: &str,
) -> Result<tokio::process::Child, crate::EngineError> {
    use crate::EngineError;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(EngineError::io(format!("open {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(EngineError::io("duplicate the log handle"))?;
    cmd.current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    if let Some(user) = os_user {
        cmd.uid(user.uid).gid(user.gid);
    }
    cmd.spawn()
        .map_err(EngineError::io(format!("start {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kill_tree_ends_children_that_left_the_group() {
        // The grandchild starts a session of its own, as PostgreSQL's
        // children do, so the group of the root does not hold it.
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "setsid sleep 300 & sleep 300"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let root = child.id().expect("pid");
        let mut members = Vec::new();
        for _ in 0..100 {
            members = tree(root);
            if members.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(members.len() >= 2, "tree of {root}: {members:?}");
        signal_group(root, Signal::SIGKILL);
        let _ = child.wait().await;
        // The setsid'd sleep survives a group kill...
        let orphans: Vec<u32> = members.iter().copied().filter(|p| is_alive(*p)).collect();
        assert!(!orphans.is_empty(), "a group kill ended the whole tree");
        signal(orphans[0], Signal::SIGKILL);

        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "setsid sleep 300 & sleep 300"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let root = child.id().expect("pid");
        for _ in 0..100 {
            if tree(root).len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ...and kill_tree ends it.
        let killed = kill_tree(root);
        let _ = child.wait().await;
        assert!(killed.len() >= 2, "{killed:?}");
        let left = wait_gone(&killed, Duration::from_secs(2)).await;
        assert!(left.is_empty(), "still running: {left:?}");
    }
}
