//! One supervisor for every long-running child mds starts: the managed
//! PostgreSQL, each managed redis-server, and (later) runtime instances.
//!
//! The contract: a [`Program`] says how to start one incarnation (its
//! command, with whatever environment or port it picks for that start),
//! how to probe it, and optionally how to find processes of an earlier
//! incarnation. The [`Supervisor`] does the rest, the same way for all:
//!
//! - **Start**: `prepare`, then every process [`Program::leftovers`] still
//!   reports is killed and waited for, then `start`. The child must run in
//!   a process group of its own (`process_group(0)`).
//! - **Readiness**: `probe` every [`Policy::probe_every`] until it passes,
//!   the child exits, or [`Policy::ready_timeout`] passes. Only a passed
//!   probe makes the status [`EngineStatus::Running`].
//! - **Health** (optional, [`Policy::health_every`]): a running child whose
//!   probe fails [`Policy::unhealthy_after`] times in a row is reported
//!   [`EngineStatus::Unhealthy`] (not restarted) until a probe passes.
//! - **Restart**: a child that exits, fails to start or never becomes ready
//!   is restarted after an exponential backoff (doubling from
//!   [`Policy::backoff_min`] up to [`Policy::backoff_max`]; a run that was
//!   ready for [`Policy::stable_after`] resets it).
//! - **Crash-loop cut-off**: with [`Policy::crash_budget`], more failures
//!   than the budget within its window end supervision with
//!   [`EngineStatus::Failed`]; so does a failed first start under
//!   [`Policy::first_start_must_succeed`].
//! - **Stop**: [`Policy::stop_signal`] to the child, then after the grace
//!   SIGKILL to its whole tree (every process descending from it, found
//!   through /proc and frozen before the kill, whatever group or session it
//!   moved to), then to what `leftovers` reports. Nothing of the program
//!   survives a stop, forced or not. The same sweep follows a crash.
//! - **Status**: a `watch` of [`EngineStatus`], plus every transition as an
//!   [`Event`] to [`Program::observe`] (awaited in order, so it may write
//!   the state down somewhere).
//! - **Drop**: dropping the [`Supervisor`] ends its task, and a child still
//!   running is killed with its tree.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::{watch, Mutex};
use tokio::task::{AbortHandle, JoinHandle};
use tracing::Instrument;

use crate::process::{kill_and_wait, kill_tree, signal, signal_group, wait_gone};
use crate::EngineStatus;

/// How long the sweep of leftovers waits for SIGKILLed processes to go.
const SWEEP_WAIT: Duration = Duration::from_secs(5);

/// One started incarnation: its child process, and whatever else the
/// program keeps for as long as it runs (its port, a guard), which
/// [`Program::probe`] can read.
pub trait Incarnation: Send + Sync + 'static {
    fn child(&mut self) -> &mut Child;
}

impl Incarnation for Child {
    fn child(&mut self) -> &mut Child {
        self
    }
}

/// What one supervised program supplies.
pub trait Program: Send + Sync + 'static {
    type Run: Incarnation;

    /// Names it in logs (`postgres`, `redis-server bnd_...`).
    fn name(&self) -> String;

    /// Starts one incarnation, in a process group of its own. An error is
    /// a failed start (restarted with backoff, like a crash).
    fn start(&self) -> impl Future<Output = Result<Self::Run, String>> + Send;

    /// Whether the incarnation serves. Should bound itself (a connect
    /// timeout); the supervisor also cuts it at the readiness deadline.
    fn probe(&self, run: &Self::Run) -> impl Future<Output = bool> + Send;

    /// Before each start: end gracefully what an earlier incarnation left
    /// (a server of an mds that was killed). What is still there afterwards,
    /// by [`Program::leftovers`], is then killed.
    fn prepare(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Processes of this program outside the current child's tree: those
    /// of an earlier incarnation, found by what they hold (their data
    /// directory). They are killed before a start, after a crash and after
    /// a stop.
    fn leftovers(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Every transition, in order.
    fn observe(&self, event: Event) -> impl Future<Output = ()> + Send {
        let _ = event;
        async {}
    }
}

/// A transition of a supervised program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An incarnation was started; it is not ready yet.
    Started { pid: u32 },
    /// Its probe passed: it serves.
    Ready { pid: u32 },
    /// It exited, or its probe did not pass in time, before it was ready.
    NotReady { reason: String },
    /// `failures` probes in a row failed while it ran.
    Unhealthy { failures: u32 },
    /// A probe passed again after [`Event::Unhealthy`].
    Healthy,
    /// It exited on its own after it was ready.
    Exited { reason: String },
    /// [`Program::start`] failed.
    StartFailed { reason: String },
    /// It starts again after `delay`; `restarts` counts every restart of
    /// this supervisor so far, this one included.
    Restarting {
        delay: Duration,
        restarts: u32,
        reason: String,
    },
    /// Supervision ended without a stop being asked for (crash loop, or a
    /// failed first start).
    GaveUp { reason: String },
    /// Stopped as asked; `forced` when the grace ran out and it was killed.
    Stopped { forced: bool },
}

/// More than `crashes` failures within `window` end supervision.
#[derive(Debug, Clone, Copy)]
pub struct CrashBudget {
    pub crashes: usize,
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// Bound on becoming ready after a start.
    pub ready_timeout: Duration,
    /// How often readiness is probed.
    pub probe_every: Duration,
    /// How often a running child is probed; `None`: never (only its exit
    /// is watched).
    pub health_every: Option<Duration>,
    /// Failed probes in a row that make a running child unhealthy.
    pub unhealthy_after: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A run that was ready this long resets the backoff.
    pub stable_after: Duration,
    /// `None`: restart for ever.
    pub crash_budget: Option<CrashBudget>,
    /// A first start that fails (start error, exit or probe timeout) ends
    /// supervision instead of being retried.
    pub first_start_must_succeed: bool,
    /// Asks the child to stop; SIGKILL of its tree follows after the grace.
    pub stop_signal: Signal,
    /// Send [`Policy::stop_signal`] to the child's whole group rather than
    /// to the child alone.
    pub signal_group: bool,
    pub stop_grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            ready_timeout: Duration::from_secs(60),
            probe_every: Duration::from_millis(25),
            health_every: None,
            unhealthy_after: 3,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            stable_after: Duration::from_secs(30),
            crash_budget: None,
            first_start_must_succeed: false,
            stop_signal: Signal::SIGTERM,
            signal_group: false,
            stop_grace: Duration::from_secs(10),
        }
    }
}

impl Policy {
    /// The delay before the `failures`-th restart in a row (from 1).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.backoff_min
            .saturating_mul(1 << doublings)
            .min(self.backoff_max)
    }
}

/// State shared by the handle and the task.
struct Shared {
    status: watch::Sender<EngineStatus>,
    /// `Some(grace)` once a stop is asked for.
    stop: watch::Sender<Option<Duration>>,
    /// The current child's pid (0: none).
    pid: AtomicU32,
    restarts: AtomicU32,
    stop_grace: Duration,
}

/// The handle of one supervised program. Dropping it kills the program.
pub struct Supervisor {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
    abort: AbortHandle,
}

impl Supervisor {
    /// Starts supervising `program` on the current tokio runtime.
    pub fn start<P: Program>(program: P, policy: Policy) -> Self {
        let (status, _) = watch::channel(EngineStatus::Starting);
        let (stop, stop_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            status,
            stop,
            pid: AtomicU32::new(0),
            restarts: AtomicU32::new(0),
            stop_grace: policy.stop_grace,
        });
        // In the caller's span: the supervisor's log lines name what
        // started it (the request, the instance).
        let task =
            tokio::spawn(supervise(program, policy, shared.clone(), stop_rx).in_current_span());
        Self {
            shared,
            abort: task.abort_handle(),
            task: Mutex::new(Some(task)),
        }
    }

    pub fn status(&self) -> EngineStatus {
        self.shared.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<EngineStatus> {
        self.shared.status.subscribe()
    }

    /// The current child's pid, while there is one.
    pub fn pid(&self) -> Option<u32> {
        match self.shared.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.shared.restarts.load(Ordering::SeqCst)
    }

    /// Waits up to `limit` for [`EngineStatus::Running`]. Otherwise the
    /// status it ended in (`Stopped`, `Failed`) or had at the limit.
    pub async fn wait_running(&self, limit: Duration) -> Result<(), EngineStatus> {
        let mut rx = self.watch_status();
        let waited = tokio::time::timeout(
            limit,
            rx.wait_for(|s| {
                matches!(
                    s,
                    EngineStatus::Running | EngineStatus::Stopped | EngineStatus::Failed { .. }
                )
            }),
        )
        .await;
        match waited {
            Ok(Ok(status)) if *status == EngineStatus::Running => Ok(()),
            Ok(Ok(status)) => Err(status.clone()),
            _ => Err(self.status()),
        }
    }

    /// Stops it with the policy's grace and waits until it is stopped.
    pub async fn stop(&self) {
        self.stop_within(self.shared.stop_grace).await;
    }

    /// Stops it, killing its tree if it has not stopped after `grace`, and
    /// waits until it is stopped and nothing of it is left.
    pub async fn stop_within(&self, grace: Duration) {
        self.shared.stop.send_if_modified(|stop| {
            let first = stop.is_none();
            if first {
                *stop = Some(grace);
            }
            first
        });
        let task = self.task.lock().await.take();
        match task {
            Some(task) => {
                let _ = task.await;
            }
            None => {
                // Another caller is awaiting the task.
                let mut rx = self.watch_status();
                let _ = rx
                    .wait_for(|s| matches!(s, EngineStatus::Stopped | EngineStatus::Failed { .. }))
                    .await;
            }
        }
    }

    /// Kills the current child's tree now (no grace) and ends supervision;
    /// for callers that cannot wait. [`Supervisor::stop_within`] still
    /// waits for the end, if wanted.
    pub fn kill(&self) {
        self.shared.stop.send_if_modified(|stop| {
            let first = stop.is_none();
            if first {
                *stop = Some(Duration::ZERO);
            }
            first
        });
        if let Some(pid) = self.pid() {
            kill_tree(pid);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Dropping the task's future drops the incarnation's guard, which
        // kills a child still running.
        self.abort.abort();
    }
}

/// Kills the child's tree if it is dropped while running (the task was
/// aborted, or panicked).
struct Guard<R: Incarnation> {
    run: R,
    pid: u32,
}

impl<R: Incarnation> Drop for Guard<R> {
    fn drop(&mut self) {
        // Not yet reaped, so the pid is still this child's.
        if matches!(self.run.child().try_wait(), Ok(None)) {
            kill_tree(self.pid);
        }
    }
}

enum Readiness {
    Ready,
    NotReady(String),
    Stop(Duration),
}

enum Ended {
    Exited(String),
    Stop(Duration),
}

/// What comes after a failure.
enum Next {
    Restart,
    Stop,
    GiveUp,
}

struct Loop<P: Program> {
    program: P,
    policy: Policy,
    shared: Arc<Shared>,
    stop: watch::Receiver<Option<Duration>>,
    name: String,
    /// Failures since the last ready incarnation (the status's attempt).
    attempt: u32,
    /// Failures since the last stable run (the backoff's exponent).
    unstable: u32,
    crashes: VecDeque<Instant>,
    first: bool,
}

async fn supervise<P: Program>(
    program: P,
    policy: Policy,
    shared: Arc<Shared>,
    stop: watch::Receiver<Option<Duration>>,
) {
    let name = program.name();
    let mut sup = Loop {
        program,
        policy,
        shared,
        stop,
        name,
        attempt: 0,
        unstable: 0,
        crashes: VecDeque::new(),
        first: true,
    };
    sup.run().await;
}

impl<P: Program> Loop<P> {
    fn stop_asked(&self) -> Option<Duration> {
        *self.stop.borrow()
    }

    fn set_status(&self, status: EngineStatus) {
        self.shared.status.send_replace(status);
    }

    fn set_pid(&self, pid: u32) {
        self.shared.pid.store(pid, Ordering::SeqCst);
    }

    async fn run(&mut self) {
        loop {
            if self.stop_asked().is_some() {
                return self.stopped(false).await;
            }
            self.program.prepare().await;
            self.sweep().await;
            if self.stop_asked().is_some() {
                return self.stopped(false).await;
            }
            let run = match self.program.start().await {
                Ok(run) => run,
                Err(reason) => {
                    tracing::error!(program = %self.name, %reason, "cannot start");
                    self.program
                        .observe(Event::StartFailed {
                            reason: reason.clone(),
                        })
                        .await;
                    match self.failed(reason).await {
                        Next::Restart => continue,
                        Next::Stop => return self.stopped(false).await,
                        Next::GiveUp => return,
                    }
                }
            };
            let mut run = run;
            let pid = run.child().id().unwrap_or_default();
            let mut guard = Guard { run, pid };
            self.set_pid(pid);
            self.program.observe(Event::Started { pid }).await;

            let next = match self.become_ready(&mut guard).await {
                Readiness::Stop(grace) => {
                    let forced = self.stop_child(&mut guard, grace).await;
                    return self.stopped(forced).await;
                }
                Readiness::NotReady(reason) => {
                    tracing::error!(program = %self.name, pid, %reason, "did not become ready");
                    self.kill_child(&mut guard).await;
                    self.program
                        .observe(Event::NotReady {
                            reason: reason.clone(),
                        })
                        .await;
                    self.failed(reason).await
                }
                Readiness::Ready => {
                    tracing::info!(program = %self.name, pid, "ready");
                    self.first = false;
                    self.attempt = 0;
                    self.set_status(EngineStatus::Running);
                    self.program.observe(Event::Ready { pid }).await;
                    let since = Instant::now();
                    match self.watch_running(&mut guard).await {
                        Ended::Stop(grace) => {
                            let forced = self.stop_child(&mut guard, grace).await;
                            return self.stopped(forced).await;
                        }
                        Ended::Exited(reason) => {
                            self.set_pid(0);
                            // Whatever it forked that left its group, and
                            // orphans that hold its resources (PostgreSQL's
                            // backends hold the shared memory a new
                            // postmaster needs).
                            signal_group(pid, Signal::SIGKILL);
                            self.sweep().await;
                            if self.stop_asked().is_some() {
                                // Killed on request (`Supervisor::kill`).
                                return self.stopped(true).await;
                            }
                            tracing::error!(program = %self.name, pid, %reason, "exited; restarting it");
                            self.program
                                .observe(Event::Exited {
                                    reason: reason.clone(),
                                })
                                .await;
                            if since.elapsed() >= self.policy.stable_after {
                                self.unstable = 0;
                            }
                            self.failed(reason).await
                        }
                    }
                }
            };
            match next {
                Next::Restart => {}
                Next::Stop => return self.stopped(false).await,
                Next::GiveUp => return,
            }
        }
    }

    /// Probes until ready, exited, timed out or asked to stop.
    async fn become_ready(&mut self, guard: &mut Guard<P::Run>) -> Readiness {
        let deadline = tokio::time::Instant::now() + self.policy.ready_timeout;
        loop {
            if let Some(grace) = self.stop_asked() {
                return Readiness::Stop(grace);
            }
            match guard.run.child().try_wait() {
                Ok(Some(status)) => {
                    return Readiness::NotReady(format!("exited during start-up ({status})"))
                }
                Err(e) => return Readiness::NotReady(format!("cannot watch it: {e}")),
                Ok(None) => {}
            }
            let passed = tokio::time::timeout_at(deadline, self.program.probe(&guard.run)).await;
            if matches!(passed, Ok(true)) {
                return Readiness::Ready;
            }
            if tokio::time::Instant::now() >= deadline {
                return Readiness::NotReady(format!(
                    "its probe did not pass within {} s",
                    self.policy.ready_timeout.as_secs_f32()
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(self.policy.probe_every) => {}
                _ = self.stop.changed() => {}
                _ = guard.run.child().wait() => {}
            }
        }
    }

    /// Watches a ready child until it exits or a stop is asked for.
    async fn watch_running(&mut self, guard: &mut Guard<P::Run>) -> Ended {
        enum Woke {
            Exited(String),
            Stop,
            Check,
        }
        let mut failures = 0u32;
        loop {
            let every = self.policy.health_every;
            let check = async move {
                match every {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending().await,
                }
            };
            let woke = tokio::select! {
                status = guard.run.child().wait() => Woke::Exited(match status {
                    Ok(status) => status.to_string(),
                    Err(e) => format!("cannot watch it: {e}"),
                }),
                _ = self.stop.changed() => Woke::Stop,
                _ = check => Woke::Check,
            };
            match woke {
                Woke::Exited(reason) => return Ended::Exited(reason),
                Woke::Stop => {
                    if let Some(grace) = self.stop_asked() {
                        return Ended::Stop(grace);
                    }
                }
                Woke::Check => {
                    if self.stop_asked().is_some() {
                        continue;
                    }
                    if self.program.probe(&guard.run).await {
                        if failures >= self.policy.unhealthy_after {
                            self.set_status(EngineStatus::Running);
                            self.program.observe(Event::Healthy).await;
                        }
                        failures = 0;
                    } else {
                        failures += 1;
                        if failures == self.policy.unhealthy_after {
                            self.set_status(EngineStatus::Unhealthy { failures });
                            self.program.observe(Event::Unhealthy { failures }).await;
                        }
                    }
                }
            }
        }
    }

    /// Counts a failure; sleeps the backoff unless supervision ends.
    async fn failed(&mut self, reason: String) -> Next {
        self.set_pid(0);
        self.attempt += 1;
        self.unstable += 1;
        let now = Instant::now();
        self.crashes.push_back(now);
        let give_up = if self.first && self.policy.first_start_must_succeed {
            Some(reason.clone())
        } else if let Some(budget) = self.policy.crash_budget {
            while self
                .crashes
                .front()
                .is_some_and(|t| now.duration_since(*t) > budget.window)
            {
                self.crashes.pop_front();
            }
            (self.crashes.len() > budget.crashes).then(|| {
                format!(
                    "crashed {} times in {} s ({reason}); not restarting",
                    self.crashes.len(),
                    budget.window.as_secs()
                )
            })
        } else {
            None
        };
        self.first = false;
        if let Some(reason) = give_up {
            tracing::error!(program = %self.name, %reason, "giving up");
            self.set_status(EngineStatus::Failed {
                reason: reason.clone(),
            });
            self.program.observe(Event::GaveUp { reason }).await;
            return Next::GiveUp;
        }
        let delay = self.policy.backoff(self.unstable);
        let restarts = self.shared.restarts.fetch_add(1, Ordering::SeqCst) + 1;
        self.set_status(EngineStatus::Restarting {
            attempt: self.attempt,
        });
        self.program
            .observe(Event::Restarting {
                delay,
                restarts,
                reason,
            })
            .await;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.stop.changed() => {}
        }
        match self.stop_asked() {
            Some(_) => Next::Stop,
            None => Next::Restart,
        }
    }

    /// The stop signal, then after `grace` SIGKILL of the whole tree.
    /// Returns whether it had to kill.
    async fn stop_child(&mut self, guard: &mut Guard<P::Run>, grace: Duration) -> bool {
        let pid = guard.pid;
        if !grace.is_zero() {
            if self.policy.signal_group {
                signal_group(pid, self.policy.stop_signal);
            } else {
                signal(pid, self.policy.stop_signal);
            }
            if tokio::time::timeout(grace, guard.run.child().wait())
                .await
                .is_ok()
            {
                tracing::info!(program = %self.name, pid, "stopped");
                self.set_pid(0);
                self.sweep().await;
                return false;
            }
            tracing::warn!(
                program = %self.name,
                pid,
                grace_ms = grace.as_millis() as u64,
                "did not stop within its grace; killing its whole tree"
            );
        }
        self.kill_child(guard).await;
        true
    }

    /// SIGKILL of the child's tree (before it is reaped, while its
    /// descendants can still be found through it), then the leftovers.
    async fn kill_child(&mut self, guard: &mut Guard<P::Run>) {
        let mut killed = Vec::new();
        if matches!(guard.run.child().try_wait(), Ok(None)) {
            killed = kill_tree(guard.pid);
        }
        let _ = guard.run.child().wait().await;
        signal_group(guard.pid, Signal::SIGKILL);
        self.set_pid(0);
        // A process that is exiting may no longer show what it held (its
        // working directory), so the sweep may not see it: wait for the
        // tree itself.
        let survivors = wait_gone(&killed, SWEEP_WAIT).await;
        if !survivors.is_empty() {
            tracing::error!(program = %self.name, ?survivors, "processes outlived SIGKILL");
        }
        self.sweep().await;
    }

    /// Kills what [`Program::leftovers`] reports and waits until it is gone.
    async fn sweep(&self) {
        let left = self.program.leftovers();
        if left.is_empty() {
            return;
        }
        tracing::warn!(program = %self.name, pids = ?left, "killing processes an earlier incarnation left");
        let still = kill_and_wait(&left, SWEEP_WAIT).await;
        if !still.is_empty() {
            tracing::error!(program = %self.name, pids = ?still, "processes an earlier incarnation left survive SIGKILL");
        }
    }

    async fn stopped(&mut self, forced: bool) {
        self.set_pid(0);
        self.set_status(EngineStatus::Stopped);
        self.program.observe(Event::Stopped { forced }).await;
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::process::{tree, wait_gone};

    /// `sh -c SCRIPT`; ready while `ready_file` exists (always, if none).
    struct Sh {
        script: String,
        ready_file: Option<PathBuf>,
        events: Arc<std::sync::Mutex<Vec<Event>>>,
    }

    impl Sh {
        fn new(script: &str) -> (Self, Arc<std::sync::Mutex<Vec<Event>>>) {
            let events = Arc::new(std::sync::Mutex::new(Vec::new()));
            let sh = Self {
                script: script.to_string(),
                ready_file: None,
                events: events.clone(),
            };
            (sh, events)
        }
    }

    impl Program for Sh {
        type Run = Child;

        fn name(&self) -> String {
            "sh".to_string()
        }

        async fn start(&self) -> Result<Child, String> {
            tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&self.script)
                .process_group(0)
                .spawn()
                .map_err(|e| e.to_string())
        }

        async fn probe(&self, _run: &Child) -> bool {
            self.ready_file.as_ref().is_none_or(|f| f.exists())
        }

        async fn observe(&self, event: Event) {
            self.events.lock().expect("events").push(event);
        }
    }

    fn quick() -> Policy {
        Policy {
            ready_timeout: Duration::from_secs(5),
            probe_every: Duration::from_millis(10),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
            stop_grace: Duration::from_secs(2),
            ..Policy::default()
        }
    }

    async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f()
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let policy = Policy {
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(8),
            ..Policy::default()
        };
        let delays: Vec<u128> = (1..=8).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(8));
    }

    #[tokio::test]
    async fn a_crash_loop_is_cut_off_after_its_budget() {
        let (mut sh, events) = Sh::new("exit 3");
        sh.ready_file = Some(PathBuf::from("/nonexistent/never"));
        let policy = Policy {
            crash_budget: Some(CrashBudget {
                crashes: 2,
                window: Duration::from_secs(60),
            }),
            ..quick()
        };
        let sup = Supervisor::start(sh, policy);
        let ended = sup.wait_running(Duration::from_secs(10)).await;
        assert!(
            matches!(&ended, Err(EngineStatus::Failed { reason }) if reason.contains("3 times")),
            "{ended:?}"
        );
        assert_eq!(sup.restarts(), 2);
        let events = events.lock().expect("events").clone();
        assert!(
            matches!(events.last(), Some(Event::GaveUp { .. })),
            "{events:?}"
        );
        let restarting = events
            .iter()
            .filter(|e| matches!(e, Event::Restarting { .. }))
            .count();
        assert_eq!(restarting, 2, "{events:?}");
    }

    #[tokio::test]
    async fn a_first_start_that_never_gets_ready_can_end_supervision() {
        let (mut sh, _) = Sh::new("sleep 300");
        sh.ready_file = Some(PathBuf::from("/nonexistent/never"));
        let policy = Policy {
            ready_timeout: Duration::from_millis(200),
            first_start_must_succeed: true,
            ..quick()
        };
        let sup = Supervisor::start(sh, policy);
        let ended = sup.wait_running(Duration::from_secs(10)).await;
        assert!(
            matches!(ended, Err(EngineStatus::Failed { .. })),
            "{ended:?}"
        );
        assert_eq!(sup.pid(), None);
    }

    #[tokio::test]
    async fn a_crash_is_restarted_and_a_stop_is_clean() {
        let dir = tempfile::tempdir().expect("temp dir");
        let count = dir.path().join("starts");
        // Crashes on its first run only.
        let script = format!(
            "echo x >> {f}; [ $(wc -l < {f}) -gt 1 ] || exit 1; exec sleep 300",
            f = count.display()
        );
        let (sh, events) = Sh::new(&script);
        let sup = Supervisor::start(sh, quick());
        assert!(
            until(Duration::from_secs(5), || sup.restarts() == 1
                && sup.status() == EngineStatus::Running)
            .await,
            "{:?}",
            sup.status()
        );
        let pid = sup.pid().expect("pid");
        sup.stop().await;
        assert_eq!(sup.status(), EngineStatus::Stopped);
        assert!(wait_gone(&[pid], Duration::from_secs(2)).await.is_empty());
        let events = events.lock().expect("events").clone();
        assert_eq!(
            events.last(),
            Some(&Event::Stopped { forced: false }),
            "{events:?}"
        );
    }

    // The child ignores the stop signal and forks a process that leads a
    // session of its own (as PostgreSQL's children do).
    #[tokio::test]
    async fn a_stop_past_its_grace_kills_the_whole_tree() {
        let (sh, events) = Sh::new("trap '' TERM; setsid sleep 300 & while :; do sleep 1; done");
        let sup = Supervisor::start(sh, quick());
        sup.wait_running(Duration::from_secs(5))
            .await
            .expect("running");
        let root = sup.pid().expect("pid");
        let mut members = Vec::new();
        assert!(
            until(Duration::from_secs(5), || {
                members = tree(root);
                members.len() >= 3
            })
            .await,
            "{members:?}"
        );
        let began = Instant::now();
        sup.stop_within(Duration::from_millis(200)).await;
        assert!(began.elapsed() < Duration::from_secs(3));
        let left = wait_gone(&members, Duration::from_secs(2)).await;
        assert!(left.is_empty(), "survived the stop: {left:?}");
        let events = events.lock().expect("events").clone();
        assert_eq!(events.last(), Some(&Event::Stopped { forced: true }));
    }

    #[tokio::test]
    async fn dropping_the_supervisor_kills_the_tree() {
        let (sh, _) = Sh::new("setsid sleep 300 & while :; do sleep 1; done");
        let sup = Supervisor::start(sh, quick());
        sup.wait_running(Duration::from_secs(5))
            .await
            .expect("running");
        let root = sup.pid().expect("pid");
        let mut members = Vec::new();
        assert!(
            until(Duration::from_secs(5), || {
                members = tree(root);
                members.len() >= 3
            })
            .await
        );
        drop(sup);
        let left = wait_gone(&members, Duration::from_secs(3)).await;
        assert!(left.is_empty(), "survived the drop: {left:?}");
    }

    #[tokio::test]
    async fn failing_probes_make_it_unhealthy_until_one_passes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ready = dir.path().join("ready");
        std::fs::write(&ready, "").expect("ready file");
        let (mut sh, events) = Sh::new("exec sleep 300");
        sh.ready_file = Some(ready.clone());
        let policy = Policy {
            health_every: Some(Duration::from_millis(10)),
            unhealthy_after: 2,
            ..quick()
        };
        let sup = Supervisor::start(sh, policy);
        sup.wait_running(Duration::from_secs(5))
            .await
            .expect("running");
        std::fs::remove_file(&ready).expect("remove");
        assert!(
            until(Duration::from_secs(5), || matches!(
                sup.status(),
                EngineStatus::Unhealthy { failures: 2 }
            ))
            .await
        );
        std::fs::write(&ready, "").expect("ready file");
        assert!(
            until(Duration::from_secs(5), || sup.status()
                == EngineStatus::Running)
            .await
        );
        assert_eq!(sup.restarts(), 0, "an unhealthy child is not restarted");
        sup.stop().await;
        let events = events.lock().expect("events").clone();
        assert!(events.contains(&Event::Unhealthy { failures: 2 }));
        assert!(events.contains(&Event::Healthy));
    }
}
