//! What a backup keeps of a storage bucket and of an auth realm.
//!
//! A bucket's restore point is its index: every object row, no bytes. The
//! chunks it lists stay in the blob backend under a hold (migration 0022):
//! one counted reference per chunk, kept until the hold is released, so the
//! collector leaves them alone. Restoring writes the rows back and counts
//! their references like any write.
//!
//! A realm's export is its users and signing keys (private keys still
//! sealed); importing it replaces the binding's users and ends every
//! session, whose tokens named the replaced state.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use mds_core::ids::IdKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::IsolationLevel;

use crate::{Result, StorageRule, Store, StoreError};

/// A bucket's objects at one instant: every column of their rows, so that
/// a restore recreates them exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketIndex {
    /// The bucket it was taken of (a restore may target another).
    pub bucket_id: String,
    pub taken_at: DateTime<Utc>,
    /// In key order.
    pub objects: Vec<IndexedObject>,
}

/// One object's row (migration 0006), its chunk hashes written as hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexedObject {
    pub key: String,
    pub size: i64,
    pub etag: String,
    pub content_type: String,
    pub metadata: Value,
    #[serde(with = "hex_list")]
    pub chunks: Vec<Vec<u8>>,
    pub chunk_sizes: Vec<i64>,
    pub last_modified: DateTime<Utc>,
}

/// What a restore did to the bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Objects the bucket held before (all replaced).
    pub removed: u64,
    /// Objects it holds now: the index's.
    pub restored: u64,
    /// Their total size.
    pub bytes: i64,
}

/// A hold on the chunks of a bucket index (see [`Store::snapshot_bucket_index`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRow {
    pub id: String,
    pub bucket_id: String,
    /// Distinct chunks held.
    pub chunks: i64,
    pub created_at: DateTime<Utc>,
}

/// An auth binding's users and signing keys, read at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealmExport {
    /// The binding it was read from.
    pub binding_id: String,
    pub exported_at: DateTime<Utc>,
    pub users: Vec<ExportedUser>,
    pub signing_keys: Vec<ExportedKey>,
}

/// Every column of an `auth_users` row but its binding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedUser {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub user_metadata: Value,
    pub email_confirmed_at: Option<DateTime<Utc>>,
    pub confirmation_sent_at: Option<DateTime<Utc>>,
    pub recovery_sent_at: Option<DateTime<Utc>>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Every column of an `auth_signing_keys` row but its binding; the private
/// key stays sealed (context `auth-signing-key:{kid}`), written as hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedKey {
    pub kid: String,
    pub state: String,
    #[serde(with = "hex_bytes")]
    pub sealed_private: Vec<u8>,
    pub public_jwk: Value,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Users the binding holds now: the export's.
    pub users: u64,
    /// Sessions deleted (live or not): every one the binding had.
    pub sessions_ended: u64,
    /// Refresh and one-time email tokens deleted with them.
    pub tokens_ended: u64,
    /// Signing keys written from the export (0 when the binding kept its own).
    pub keys: u64,
    /// (exported id, new id) of users whose id another binding holds: user
    /// ids are unique across bindings, so those got fresh ones. Empty when
    /// restoring into the binding the export came from.
    pub renamed: Vec<(String, String)>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

mod hex_list {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(list.len()))?;
        for bytes in list {
            seq.serialize_element(&hex::encode(bytes))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|text| hex::decode(text).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Deletes hold `hold_id` and drops the references it counted, in one
/// statement; false if there was none.
async fn release_hold(client: &impl GenericClient, hold_id: &str, grace_secs: f64) -> Result<bool> {
    let rows = client
        .query(
            "WITH old AS (DELETE FROM storage_holds WHERE id = $1 RETURNING chunks)
             SELECT mds_storage_release(chunks, $2) FROM old",
            &[&hold_id, &grace_secs],
        )
        .await?;
    Ok(!rows.is_empty())
}

impl Store {
    /// Reads bucket `bucket_id`'s objects and, in the same transaction,
    /// holds every chunk they list under `hold_id` (replacing an earlier
    /// hold of that id). No byte of content is read. Fails with
    /// `BlobMissing` (worth a retry) if a listed chunk was collected between
    /// the read and the hold, which any grace longer than that instant
    /// rules out.
    pub async fn snapshot_bucket_index(
        &self,
        bucket_id: &str,
        hold_id: &str,
        grace_secs: f64,
    ) -> Result<BucketIndex> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // KEY SHARE: the bucket is not deleted under the read.
        let bucket = tx
            .query_opt(
                "SELECT 1 FROM storage_buckets WHERE id = $1 FOR KEY SHARE",
                &[&bucket_id],
            )
            .await?;
        if bucket.is_none() {
            return Err(StoreError::Storage(StorageRule::NoSuchBucket));
        }
        release_hold(&tx, hold_id, grace_secs).await?;
        // One statement, one snapshot: the hold lists exactly the chunks of
        // the rows returned.
        let rows = tx
            .query(
                "WITH o AS MATERIALIZED (
                     SELECT key, size, etag, content_type, metadata, chunks, chunk_sizes,
                            last_modified
                     FROM storage_objects WHERE bucket_id = $1),
                 held AS (
                     INSERT INTO storage_holds (id, bucket_id, chunks)
                     SELECT $2, $1, coalesce(array_agg(DISTINCT c), '{}')
                     FROM o, unnest(o.chunks) AS c)
                 SELECT * FROM o ORDER BY key",
                &[&bucket_id, &hold_id],
            )
            .await?;
        let held = tx
            .query_one(
                "SELECT mds_storage_retain(chunks), now() FROM storage_holds WHERE id = $1",
                &[&hold_id],
            )
            .await?;
        if !held.get::<_, bool>(0) {
            return Err(StoreError::Storage(StorageRule::BlobMissing));
        }
        let taken_at = held.get(1);
        tx.commit().await?;
        let objects = rows
            .iter()
            .map(|row| IndexedObject {
                key: row.get(0),
                size: row.get(1),
                etag: row.get(2),
                content_type: row.get(3),
                metadata: row.get(4),
                chunks: row.get(5),
                chunk_sizes: row.get(6),
                last_modified: row.get(7),
            })
            .collect();
        Ok(BucketIndex {
            bucket_id: bucket_id.to_string(),
            taken_at,
            objects,
        })
    }

    /// Ends hold `hold_id`: its chunks lose the reference it counted (kept
    /// `grace_secs` more if that was their last). False if there was none.
    pub async fn release_bucket_hold(&self, hold_id: &str, grace_secs: f64) -> Result<bool> {
        let client = self.client().await?;
        release_hold(&client, hold_id, grace_secs).await
    }

    /// Every hold, oldest first: for retention to find holds whose restore
    /// point is gone (e.g. dropped while its release failed).
    pub async fn bucket_holds(&self) -> Result<Vec<HoldRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, bucket_id, cardinality(chunks)::bigint, created_at
                 FROM storage_holds ORDER BY created_at, id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| HoldRow {
                id: r.get(0),
                bucket_id: r.get(1),
                chunks: r.get(2),
                created_at: r.get(3),
            })
            .collect())
    }

    /// Of `hashes`, the chunks that have a row (not collected), each with
    /// its bytes if they are kept in the row.
    pub async fn chunk_rows(&self, hashes: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Option<Vec<u8>>)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT hash, inline FROM storage_blobs WHERE hash = ANY($1)",
                &[&hashes],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Makes bucket `bucket_id` hold exactly `index`'s objects, in one
    /// transaction: the index's chunks gain their references (failing with
    /// `BlobMissing`, nothing changed, if one was collected), the bucket's
    /// objects are deleted and their chunks released (kept `grace_secs`
    /// for reads in flight), and the index's rows are written as they
    /// were. Multipart uploads in progress are left alone.
    ///
    /// Object writes to every bucket wait for it (reads do not): some
    /// 300 ms for 10,000 objects. A delete of one of the
    /// bucket's objects at that moment may deadlock with it (the delete
    /// locks the row before the reference counts; the restore the other
    /// way round): PostgreSQL then aborts one of them, and the restore is
    /// retried here.
    pub async fn restore_bucket_index(
        &self,
        bucket_id: &str,
        index: &BucketIndex,
        grace_secs: f64,
    ) -> Result<RestoreReport> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.restore_once(bucket_id, index, grace_secs).await {
                Err(StoreError::Db(e))
                    if attempts < 3 && e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) =>
                {
                    tracing::debug!("a bucket restore met a deadlock; retrying");
                }
                done => return done,
            }
        }
    }

    async fn restore_once(
        &self,
        bucket_id: &str,
        index: &BucketIndex,
        grace_secs: f64,
    ) -> Result<RestoreReport> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Every object write counts its chunks' references (here) before
        // it reads the version it replaces; holding writers off until this
        // commits means none read a version this restore replaces, which
        // they would release a second time. Reads go on. Taken before the
        // bucket row, which a waiting writer of a new key may need.
        tx.batch_execute("LOCK TABLE storage_blobs IN SHARE ROW EXCLUSIVE MODE")
            .await?;
        let bucket = tx
            .query_opt(
                "SELECT 1 FROM storage_buckets WHERE id = $1 FOR UPDATE",
                &[&bucket_id],
            )
            .await?;
        if bucket.is_none() {
            return Err(StoreError::Storage(StorageRule::NoSuchBucket));
        }
        let wanted: Vec<&[u8]> = index
            .objects
            .iter()
            .flat_map(|o| o.chunks.iter().map(Vec::as_slice))
            .collect();
        let retained = tx
            .query_one("SELECT mds_storage_retain($1)", &[&wanted])
            .await?;
        if !retained.get::<_, bool>(0) {
            return Err(StoreError::Storage(StorageRule::BlobMissing));
        }
        // Counting `released` is what runs it (a plain SELECT in WITH runs
        // only when read).
        let removed = tx
            .query_one(
                "WITH gone AS (DELETE FROM storage_objects WHERE bucket_id = $1 RETURNING chunks),
                      released AS (
                          SELECT mds_storage_release(coalesce(array_agg(c), '{}'), $2)
                          FROM gone, unnest(gone.chunks) AS c)
                 SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM released)",
                &[&bucket_id, &grace_secs],
            )
            .await?;
        let removed: i64 = removed.get(0);
        let sink = tx
            .copy_in(
                "COPY storage_objects (bucket_id, key, size, etag, content_type, metadata,
                     chunks, chunk_sizes, last_modified) FROM STDIN BINARY",
            )
            .await?;
        let types = [
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::JSONB,
            Type::BYTEA_ARRAY,
            Type::INT8_ARRAY,
            Type::TIMESTAMPTZ,
        ];
        let writer = BinaryCopyInWriter::new(sink, &types);
        let mut writer = std::pin::pin!(writer);
        for o in &index.objects {
            writer
                .as_mut()
                .write(&[
                    &bucket_id,
                    &o.key,
                    &o.size,
                    &o.etag,
                    &o.content_type,
                    &o.metadata,
                    &o.chunks,
                    &o.chunk_sizes,
                    &o.last_modified,
                ])
                .await?;
        }
        let restored = writer.finish().await?;
        tx.commit().await?;
        Ok(RestoreReport {
            removed: removed as u64,
            restored,
            bytes: index.objects.iter().map(|o| o.size).sum(),
        })
    }

    /// Auth binding `binding_id`'s users and signing keys in one
    /// consistent read; `None` if there is no such binding.
    pub async fn export_realm(&self, binding_id: &str) -> Result<Option<RealmExport>> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let found = tx
            .query_opt("SELECT now() FROM bindings WHERE id = $1", &[&binding_id])
            .await?;
        let Some(found) = found else {
            return Ok(None);
        };
        let users = tx
            .query(
                "SELECT id, email, password_hash, role, user_metadata, email_confirmed_at,
                        confirmation_sent_at, recovery_sent_at, last_sign_in_at, created_at,
                        updated_at
                 FROM auth_users WHERE binding_id = $1 ORDER BY created_at, id",
                &[&binding_id],
            )
            .await?;
        let keys = tx
            .query(
                "SELECT kid, state, sealed_private, public_jwk, created_at, activated_at,
                        retired_at
                 FROM auth_signing_keys WHERE binding_id = $1 ORDER BY created_at, kid",
                &[&binding_id],
            )
            .await?;
        tx.commit().await?;
        Ok(Some(RealmExport {
            binding_id: binding_id.to_string(),
            exported_at: found.get(0),
            users: users
                .iter()
                .map(|r| ExportedUser {
                    id: r.get(0),
                    email: r.get(1),
                    password_hash: r.get(2),
                    role: r.get(3),
                    user_metadata: r.get(4),
                    email_confirmed_at: r.get(5),
                    confirmation_sent_at: r.get(6),
                    recovery_sent_at: r.get(7),
                    last_sign_in_at: r.get(8),
                    created_at: r.get(9),
                    updated_at: r.get(10),
                })
                .collect(),
            signing_keys: keys
                .iter()
                .map(|r| ExportedKey {
                    kid: r.get(0),
                    state: r.get(1),
                    sealed_private: r.get(2),
                    public_jwk: r.get(3),
                    created_at: r.get(4),
                    activated_at: r.get(5),
                    retired_at: r.get(6),
                })
                .collect(),
        }))
    }

    /// Makes auth binding `binding_id`'s users exactly `export`'s, in one
    /// transaction, and deletes every session, refresh token and one-time
    /// token it had (they named the replaced users). With `keep_keys` its
    /// signing keys stay (restoring into another binding); otherwise they
    /// become the export's. Ids are global: a user id another binding holds
    /// gets a fresh one (listed in the report), and the export's keys fail
    /// with a conflict if another binding still holds their kids.
    /// `None` if there is no such binding.
    pub async fn import_realm(
        &self,
        binding_id: &str,
        export: &RealmExport,
        keep_keys: bool,
    ) -> Result<Option<ImportReport>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Serialises with key rotations, which lock the binding too.
        let found = tx
            .query_opt(
                "SELECT 1 FROM bindings WHERE id = $1 FOR UPDATE",
                &[&binding_id],
            )
            .await?;
        if found.is_none() {
            return Ok(None);
        }
        let ended = tx
            .query_one(
                "WITH one_time AS (
                     DELETE FROM auth_one_time_tokens t USING auth_users u
                     WHERE u.id = t.user_id AND u.binding_id = $1 RETURNING 1),
                 refresh AS (
                     DELETE FROM auth_refresh_tokens r USING auth_sessions s
                     WHERE s.id = r.session_id AND s.binding_id = $1 RETURNING 1)
                 SELECT (SELECT count(*) FROM one_time) + (SELECT count(*) FROM refresh)",
                &[&binding_id],
            )
            .await?;
        let tokens_ended: i64 = ended.get(0);
        let sessions_ended = tx
            .execute(
                "DELETE FROM auth_sessions WHERE binding_id = $1",
                &[&binding_id],
            )
            .await?;
        tx.execute(
            "DELETE FROM auth_users WHERE binding_id = $1",
            &[&binding_id],
        )
        .await?;

        let ids: Vec<&str> = export.users.iter().map(|u| u.id.as_str()).collect();
        let taken: std::collections::HashSet<String> = tx
            .query("SELECT id FROM auth_users WHERE id = ANY($1)", &[&ids])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut renamed = Vec::new();
        let ids: Vec<String> = export
            .users
            .iter()
            .map(|u| {
                if taken.contains(&u.id) {
                    let fresh = IdKind::User.mint();
                    renamed.push((u.id.clone(), fresh.clone()));
                    fresh
                } else {
                    u.id.clone()
                }
            })
            .collect();
        let column =
            |f: fn(&ExportedUser) -> &str| -> Vec<&str> { export.users.iter().map(f).collect() };
        let time = |f: fn(&ExportedUser) -> Option<DateTime<Utc>>| -> Vec<Option<DateTime<Utc>>> {
            export.users.iter().map(f).collect()
        };
        let metadata: Vec<&Value> = export.users.iter().map(|u| &u.user_metadata).collect();
        let users = tx
            .execute(
                "INSERT INTO auth_users (id, binding_id, email, password_hash, role,
                     user_metadata, email_confirmed_at, confirmation_sent_at, recovery_sent_at,
                     last_sign_in_at, created_at, updated_at)
                 SELECT id, $1, email, password_hash, role, user_metadata, email_confirmed_at,
                        confirmation_sent_at, recovery_sent_at, last_sign_in_at, created_at,
                        updated_at
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
                             $7::timestamptz[], $8::timestamptz[], $9::timestamptz[],
                             $10::timestamptz[], $11::timestamptz[], $12::timestamptz[])
                      AS t (id, email, password_hash, role, user_metadata, email_confirmed_at,
                            confirmation_sent_at, recovery_sent_at, last_sign_in_at,
                            created_at, updated_at)",
                &[
                    &binding_id,
                    &ids,
                    &column(|u| &u.email),
                    &column(|u| &u.password_hash),
                    &column(|u| &u.role),
                    &metadata,
                    &time(|u| u.email_confirmed_at),
                    &time(|u| u.confirmation_sent_at),
                    &time(|u| u.recovery_sent_at),
                    &time(|u| u.last_sign_in_at),
                    &time(|u| Some(u.created_at)),
                    &time(|u| Some(u.updated_at)),
                ],
            )
            .await?;

        let mut keys = 0;
        if !keep_keys {
            tx.execute(
                "DELETE FROM auth_signing_keys WHERE binding_id = $1",
                &[&binding_id],
            )
            .await?;
            let k = &export.signing_keys;
            let kids: Vec<&str> = k.iter().map(|k| k.kid.as_str()).collect();
            let states: Vec<&str> = k.iter().map(|k| k.state.as_str()).collect();
            let sealed: Vec<&[u8]> = k.iter().map(|k| k.sealed_private.as_slice()).collect();
            let jwks: Vec<&Value> = k.iter().map(|k| &k.public_jwk).collect();
            let created: Vec<DateTime<Utc>> = k.iter().map(|k| k.created_at).collect();
            let activated: Vec<Option<DateTime<Utc>>> = k.iter().map(|k| k.activated_at).collect();
            let retired: Vec<Option<DateTime<Utc>>> = k.iter().map(|k| k.retired_at).collect();
            keys = tx
                .execute(
                    "INSERT INTO auth_signing_keys (kid, binding_id, state, sealed_private,
                         public_jwk, created_at, activated_at, retired_at)
                     SELECT kid, $1, state, sealed, jwk, created, activated, retired
                     FROM unnest($2::text[], $3::text[], $4::bytea[], $5::jsonb[],
                                 $6::timestamptz[], $7::timestamptz[], $8::timestamptz[])
                          AS t (kid, state, sealed, jwk, created, activated, retired)",
                    &[
                        &binding_id,
                        &kids,
                        &states,
                        &sealed,
                        &jwks,
                        &created,
                        &activated,
                        &retired,
                    ],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(Some(ImportReport {
            users,
            sessions_ended,
            tokens_ended: tokens_ended as u64,
            keys,
            renamed,
        }))
    }
}
