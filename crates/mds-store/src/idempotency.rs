//! Idempotency records: the first response to a (caller, key, method, path)
//! is kept for 24 hours and replayed to retries.

use crate::{Result, Store};

pub struct IdempotencyKey<'a> {
    pub principal_id: &'a str,
    pub key: &'a str,
    pub method: &'a str,
    pub path: &'a str,
}

pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub sealed_body: Vec<u8>,
}

pub enum IdempotencyBegin {
    /// This request owns the key: run it, then finish or abandon.
    Started,
    /// A finished request with the same body: replay its response.
    Replay(StoredResponse),
    /// The key was used with another request body.
    Mismatch,
    /// The first request with this key is still running.
    InFlight,
}

/// How long a first request may run before a retry may take the key over
/// (the first one is presumed dead with its process).
const IN_FLIGHT_LEASE: &str = "60 seconds";
const RETENTION: &str = "24 hours";

impl Store {
    pub async fn idempotency_begin(
        &self,
        key: &IdempotencyKey<'_>,
        request_hash: &[u8],
    ) -> Result<IdempotencyBegin> {
        let client = self.client().await?;
        let claimed = client
            .query_opt(
                &format!(
                    "INSERT INTO idempotency_records (principal_id, key, method, path, request_hash)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (principal_id, key, method, path) DO UPDATE
                     SET request_hash = EXCLUDED.request_hash, status = NULL, content_type = NULL,
                         sealed_body = NULL, created_at = now(), locked_at = now()
                     WHERE idempotency_records.created_at < now() - interval '{RETENTION}'
                        OR (idempotency_records.status IS NULL
                            AND idempotency_records.request_hash = EXCLUDED.request_hash
                            AND idempotency_records.locked_at < now() - interval '{IN_FLIGHT_LEASE}')
                     RETURNING 1"
                ),
                &[&key.principal_id, &key.key, &key.method, &key.path, &request_hash],
            )
            .await?;
        if claimed.is_some() {
            return Ok(IdempotencyBegin::Started);
        }
        let row = client
            .query_opt(
                "SELECT request_hash, status, content_type, sealed_body FROM idempotency_records
                 WHERE principal_id = $1 AND key = $2 AND method = $3 AND path = $4",
                &[&key.principal_id, &key.key, &key.method, &key.path],
            )
            .await?;
        let Some(row) = row else {
            // Deleted between the two statements (an abandoned attempt).
            return Ok(IdempotencyBegin::InFlight);
        };
        let stored_hash: Vec<u8> = row.get(0);
        if stored_hash != request_hash {
            return Ok(IdempotencyBegin::Mismatch);
        }
        let status: Option<i16> = row.get(1);
        Ok(match status {
            None => IdempotencyBegin::InFlight,
            Some(status) => IdempotencyBegin::Replay(StoredResponse {
                status: status as u16,
                content_type: row.get(2),
                sealed_body: row.get::<_, Option<Vec<u8>>>(3).unwrap_or_default(),
            }),
        })
    }

    pub async fn idempotency_finish(
        &self,
        key: &IdempotencyKey<'_>,
        response: &StoredResponse,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE idempotency_records SET status = $5, content_type = $6, sealed_body = $7
                 WHERE principal_id = $1 AND key = $2 AND method = $3 AND path = $4",
                &[
                    &key.principal_id,
                    &key.key,
                    &key.method,
                    &key.path,
                    &(response.status as i16),
                    &response.content_type,
                    &response.sealed_body,
                ],
            )
            .await?;
        Ok(())
    }

    /// Forgets an attempt that failed on the server's side, so a retry runs
    /// again.
    pub async fn idempotency_abandon(&self, key: &IdempotencyKey<'_>) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM idempotency_records
                 WHERE principal_id = $1 AND key = $2 AND method = $3 AND path = $4",
                &[&key.principal_id, &key.key, &key.method, &key.path],
            )
            .await?;
        Ok(())
    }

    /// Drops records past their retention; returns how many.
    pub async fn purge_idempotency(&self) -> Result<u64> {
        let client = self.client().await?;
        Ok(client
            .execute(
                &format!(
                    "DELETE FROM idempotency_records WHERE created_at < now() - interval '{RETENTION}'"
                ),
                &[],
            )
            .await?)
    }
}
