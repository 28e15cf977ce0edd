//! The audit log (migration 0025): events appended in order, each sealed
//! to the one before it. The store numbers them and keeps the chain's
//! links; what a link is (a keyed hash) is the caller's, passed in as
//! `link`, so the key never reaches this crate.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Result, Store};

/// Arbitrary, fixed: the advisory lock every append and trim holds, so
/// that two writers (replicas) never number two events alike.
const AUDIT_LOCK: i64 = 0x006d_6473_6175_6474;

/// A stored event.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEventRow {
    pub seq: i64,
    #[serde(flatten)]
    pub event: AuditFields,
    #[serde(skip)]
    pub prev_hash: Vec<u8>,
    #[serde(skip)]
    pub hash: Vec<u8>,
}

/// An event to append; the store gives it its seq and links.
pub type NewAuditEvent = AuditFields;

/// An event's own fields, which its link seals: every column but the seq
/// and the hashes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditFields {
    /// Stored (and sealed) in microseconds.
    pub at: DateTime<Utc>,
    /// `key` or `system`.
    pub actor_kind: String,
    pub actor_id: String,
    pub actor_name: String,
    pub tenant_id: Option<String>,
    pub project_id: Option<String>,
    pub source: String,
    pub request_id: String,
    pub action: String,
    pub target: String,
    /// `ok`, `refused` or `failed`.
    pub outcome: String,
    pub detail: String,
}

impl AuditFields {
    /// The bytes a link seals, with `seq`: each field length-prefixed, so
    /// no two events encode alike; `at` in microseconds, as stored.
    pub fn encode(&self, seq: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&self.at.timestamp_micros().to_be_bytes());
        let none = "\u{0}none";
        for field in [
            self.actor_kind.as_str(),
            &self.actor_id,
            &self.actor_name,
            self.tenant_id.as_deref().unwrap_or(none),
            self.project_id.as_deref().unwrap_or(none),
            &self.source,
            &self.request_id,
            &self.action,
            &self.target,
            &self.outcome,
            &self.detail,
        ] {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

/// Which events to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this tenant's and the system's own (`None`: every tenant's).
    pub tenant_id: Option<String>,
    pub project_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Actions starting with this (`data_service.` matches them all).
    pub action: Option<String>,
    /// Older than this seq (the next page).
    pub before: Option<i64>,
    pub limit: i64,
}

/// The chain's start after a trim: the last removed event's seq and hash.
#[derive(Debug, Clone)]
pub struct AuditAnchor {
    pub seq: i64,
    pub hash: Vec<u8>,
}

const COLUMNS: &str = "seq, at, actor_kind, actor_id, actor_name, tenant_id, project_id, source, \
     request_id, action, target, outcome, detail, prev_hash, hash";

fn from_row(r: &tokio_postgres::Row) -> AuditEventRow {
    AuditEventRow {
        seq: r.get(0),
        event: AuditFields {
            at: r.get(1),
            actor_kind: r.get(2),
            actor_id: r.get(3),
            actor_name: r.get(4),
            tenant_id: r.get(5),
            project_id: r.get(6),
            source: r.get(7),
            request_id: r.get(8),
            action: r.get(9),
            target: r.get(10),
            outcome: r.get(11),
            detail: r.get(12),
        },
        prev_hash: r.get(13),
        hash: r.get(14),
    }
}

impl Store {
    /// Appends `events` in order, in one transaction: each gets the next
    /// seq and `link(prev_hash, encoded)` as its hash.
    pub async fn append_audit_events(
        &self,
        events: Vec<NewAuditEvent>,
        link: impl Fn(&[u8], &[u8]) -> Vec<u8>,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
            .await?;
        let last = tx
            .query_opt(
                "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await?;
        let (mut seq, mut prev): (i64, Vec<u8>) = match last {
            Some(row) => (row.get(0), row.get(1)),
            None => match self.anchor_in(&tx).await? {
                Some(anchor) => (anchor.seq, anchor.hash),
                None => (0, vec![0; 32]),
            },
        };
        let insert = tx
            .prepare(
                "INSERT INTO audit_events (seq, at, actor_kind, actor_id, actor_name, tenant_id,
                     project_id, source, request_id, action, target, outcome, detail, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .await?;
        for mut fields in events {
            seq += 1;
            // As it will be read back, so that it verifies.
            fields.at =
                DateTime::from_timestamp_micros(fields.at.timestamp_micros()).unwrap_or(fields.at);
            let hash = link(&prev, &fields.encode(seq));
            tx.execute(
                &insert,
                &[
                    &seq,
                    &fields.at,
                    &fields.actor_kind,
                    &fields.actor_id,
                    &fields.actor_name,
                    &fields.tenant_id,
                    &fields.project_id,
                    &fields.source,
                    &fields.request_id,
                    &fields.action,
                    &fields.target,
                    &fields.outcome,
                    &fields.detail,
                    &prev,
                    &hash,
                ],
            )
            .await?;
            prev = hash;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn anchor_in(
        &self,
        client: &impl deadpool_postgres::GenericClient,
    ) -> Result<Option<AuditAnchor>> {
        Ok(client
            .query_opt("SELECT seq, hash FROM audit_anchor", &[])
            .await?
            .map(|r| AuditAnchor {
                seq: r.get(0),
                hash: r.get(1),
            }))
    }

    /// Where the chain starts, when retention has trimmed it.
    pub async fn audit_anchor(&self) -> Result<Option<AuditAnchor>> {
        let client = self.client().await?;
        self.anchor_in(&client).await
    }

    /// Events as `query` asks, newest first.
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEventRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM audit_events
                     WHERE ($1::text IS NULL OR tenant_id = $1 OR tenant_id IS NULL)
                       AND ($2::text IS NULL OR project_id = $2)
                       AND ($3::timestamptz IS NULL OR at >= $3)
                       AND ($4::text IS NULL OR starts_with(action, $4))
                       AND ($5::bigint IS NULL OR seq < $5)
                     ORDER BY seq DESC LIMIT $6"
                ),
                &[
                    &query.tenant_id,
                    &query.project_id,
                    &query.since,
                    &query.action,
                    &query.before,
                    &query.limit,
                ],
            )
            .await?;
        Ok(rows.iter().map(from_row).collect())
    }

    /// The whole chain from its start, oldest first, `limit` after `after`.
    pub async fn audit_chain(&self, after: i64, limit: i64) -> Result<Vec<AuditEventRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"),
                &[&after, &limit],
            )
            .await?;
        Ok(rows.iter().map(from_row).collect())
    }

    /// Removes the events older than `before` and moves the anchor to the
    /// last one removed, so the chain verifies from its new start. Returns
    /// how many went.
    pub async fn trim_audit_events(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
            .await?;
        // The newest event is kept whatever its age: the next append
        // links to it.
        let Some(last) = tx
            .query_opt(
                "SELECT seq, hash FROM audit_events
                 WHERE at < $1 AND seq < (SELECT max(seq) FROM audit_events)
                 ORDER BY seq DESC LIMIT 1",
                &[&before],
            )
            .await?
        else {
            return Ok(0);
        };
        let (seq, hash): (i64, Vec<u8>) = (last.get(0), last.get(1));
        tx.execute("SET LOCAL mds.audit_trim = 'on'", &[]).await?;
        let removed = tx
            .execute("DELETE FROM audit_events WHERE seq <= $1", &[&seq])
            .await?;
        tx.execute(
            "INSERT INTO audit_anchor (seq, hash) VALUES ($1, $2)
             ON CONFLICT (one) DO UPDATE SET seq = $1, hash = $2, trimmed_at = now()",
            &[&seq, &hash],
        )
        .await?;
        tx.commit().await?;
        Ok(removed)
    }
}
