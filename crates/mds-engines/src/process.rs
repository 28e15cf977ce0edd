//! Helpers for supervised children: each runs in its own process group so
//! that stopping it also stops everything it forked.

use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Sends `signal` to the whole group led by `pid`. Errors (the group is
/// already gone) are ignored: the goal is that nothing is left.
pub fn signal_group(pid: u32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), signal);
}

pub fn is_alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
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
