//! The audit log (issue 18): who changed or revealed what, through which
//! key, from where, and with what outcome.
//!
//! - **Writing.** [`Audit::record`] queues an event and returns at once; one
//!   writer task appends what has queued in one transaction (the store
//!   numbers and links them under an advisory lock, so replicas share one
//!   chain). A request therefore does not wait on the log. The price: an
//!   event queued in the last milliseconds before a kill -9 is lost; a
//!   clean stop drains the queue ([`Audit::flush`]).
//! - **Chain.** Each event's hash is a BLAKE3 keyed hash, with a key
//!   derived from the master key, of the hash before it and of the event's
//!   fields with its seq. [`verify`] walks the chain and names the first
//!   event that does not fit: changed, missing, or out of order.
//! - **Retention.** [`trim`] removes events older than the retention and
//!   moves the chain's anchor to the last one removed, so what remains
//!   still verifies from its new start.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mds_crypto::MasterKey;
use mds_store::{AuditEventRow, NewAuditEvent, Store};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::ControlResult;

/// Events appended in one transaction at most.
const BATCH: usize = 500;
/// Events read per page while verifying.
const VERIFY_PAGE: i64 = 2000;

/// The key the chain's hashes are made with.
fn chain_key(master: &MasterKey) -> Zeroizing<[u8; 32]> {
    master.derive("audit:chain")
}

fn link(key: &[u8; 32], prev: &[u8], encoded: &[u8]) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(prev);
    hasher.update(encoded);
    hasher.finalize().as_bytes().to_vec()
}

enum Message {
    Event(Box<NewAuditEvent>),
    /// Answered once every event queued before it is stored.
    Flush(oneshot::Sender<()>),
}

/// The log's writer. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    queue: mpsc::UnboundedSender<Message>,
}

impl Audit {
    /// Starts the writer task.
    pub fn start(store: Store, master: &MasterKey) -> Self {
        let (queue, mut inbox) = mpsc::unbounded_channel::<Message>();
        let key = chain_key(master);
        tokio::spawn(async move {
            let mut events = Vec::new();
            let mut flushes = Vec::new();
            while let Some(first) = inbox.recv().await {
                let mut next = Some(first);
                while let Some(message) = next.take() {
                    match message {
                        Message::Event(event) => events.push(*event),
                        Message::Flush(done) => flushes.push(done),
                    }
                    if events.len() < BATCH {
                        next = inbox.try_recv().ok();
                    }
                }
                // Kept until stored: the database may be away a while.
                let mut wait = Duration::from_millis(50);
                while !events.is_empty() {
                    match store
                        .append_audit_events(events.clone(), |prev, encoded| {
                            link(&key, prev, encoded)
                        })
                        .await
                    {
                        Ok(()) => events.clear(),
                        Err(e) => {
                            tracing::error!(error = %e, queued = events.len(), "could not append audit events; retrying");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                for done in flushes.drain(..) {
                    let _ = done.send(());
                }
            }
        });
        Self { queue }
    }

    /// Queues one event (stamped now when it has no time).
    pub fn record(&self, mut event: NewAuditEvent) {
        if event.at.timestamp() == 0 {
            event.at = Utc::now();
        }
        if self.queue.send(Message::Event(Box::new(event))).is_err() {
            tracing::error!("the audit writer has stopped: an event was not recorded");
        }
    }

    /// Returns once every event recorded before the call is stored.
    pub async fn flush(&self) {
        let (done, stored) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = stored.await;
        }
    }
}

/// An event by the system itself (a schedule, an expiry).
pub fn system_event(
    action: &str,
    tenant_id: Option<String>,
    project_id: Option<String>,
    target: &str,
    outcome: &str,
    detail: String,
) -> NewAuditEvent {
    NewAuditEvent {
        at: Utc::now(),
        actor_kind: "system".to_string(),
        actor_name: "system".to_string(),
        tenant_id,
        project_id,
        action: action.to_string(),
        target: target.to_string(),
        outcome: outcome.to_string(),
        detail,
        ..NewAuditEvent::default()
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Events checked.
    pub events: u64,
    /// The chain's first and last seq (none when it is empty).
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// Where it starts after a trim: the seq of the last event removed.
    pub anchored_after: Option<i64>,
    /// The first link that does not hold, if any.
    pub broken: Option<BrokenLink>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: String,
}

/// Walks the whole chain, oldest first.
pub async fn verify(store: &Store, master: &MasterKey) -> ControlResult<Verification> {
    let key = chain_key(master);
    let anchor = store.audit_anchor().await?;
    let (mut expected_seq, mut prev) = match &anchor {
        Some(a) => (a.seq + 1, a.hash.clone()),
        None => (1, vec![0; 32]),
    };
    let mut found = Verification {
        events: 0,
        first_seq: None,
        last_seq: None,
        anchored_after: anchor.as_ref().map(|a| a.seq),
        broken: None,
    };
    // From the lowest stored seq on: an event removed from the start shows
    // as a gap after the anchor, one left from before it as out of order.
    let mut after = 0;
    loop {
        let page = store.audit_chain(after, VERIFY_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for row in &page {
            found.first_seq.get_or_insert(row.seq);
            found.last_seq = Some(row.seq);
            if let Some(reason) = check(&key, row, expected_seq, &prev) {
                found.broken = Some(BrokenLink {
                    seq: row.seq,
                    reason,
                });
                return Ok(found);
            }
            found.events += 1;
            expected_seq = row.seq + 1;
            prev = row.hash.clone();
        }
    }
    Ok(found)
}

/// Why `row` does not follow (`expected_seq`, `prev`), if it does not.
fn check(key: &[u8; 32], row: &AuditEventRow, expected_seq: i64, prev: &[u8]) -> Option<String> {
    if row.seq != expected_seq {
        return Some(if row.seq > expected_seq {
            format!(
                "events {expected_seq} to {} are missing before event {}",
                row.seq - 1,
                row.seq
            )
        } else {
            format!("event {} repeats or is out of order", row.seq)
        });
    }
    if row.prev_hash != prev {
        return Some(format!(
            "event {} does not link to the event before it",
            row.seq
        ));
    }
    if row.hash != link(key, &row.prev_hash, &row.event.encode(row.seq)) {
        return Some(format!(
            "event {} was changed after it was written",
            row.seq
        ));
    }
    None
}

/// Trims the log to `retention` now and every hour.
pub fn spawn_retention(store: Store, audit: Audit, retention: Duration) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every.tick().await;
            if let Err(e) = trim(&store, &audit, retention).await {
                tracing::warn!(error = %e, "could not trim the audit log; tried again in an hour");
            }
        }
    });
}

/// Removes the events older than `retention` (the newest always stays)
/// and records that it did.
pub async fn trim(store: &Store, audit: &Audit, retention: Duration) -> ControlResult<u64> {
    let before: DateTime<Utc> =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let removed = store.trim_audit_events(before).await?;
    if removed > 0 {
        audit.record(system_event(
            "audit.trim",
            None,
            None,
            "audit-events",
            "ok",
            format!(
                "{removed} events older than {} removed",
                before.to_rfc3339()
            ),
        ));
    }
    Ok(removed)
}
