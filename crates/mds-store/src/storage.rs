//! Storage metadata: buckets, objects (manifests of content-addressed
//! chunks), multipart uploads and the chunk reference counts.
//!
//! The blob protocol (see migration 0006): a writer pins its chunks
//! ([`Store::pin_blobs`]) before it puts them in the blob backend, and
//! commits the manifest afterwards, which counts a reference to each chunk.
//! The collector deletes a chunk only while holding its row lock, with no
//! references and no pin; so a manifest never names a deleted chunk.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::Row;

use crate::{Result, Store, StoreError};

/// Why a storage change was refused; each maps to one S3/MIOSA error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageRule {
    /// A chunk the manifest names was collected meanwhile; retry the write.
    BlobMissing,
    /// The bucket still holds objects or uploads.
    BucketNotEmpty,
    NoSuchBucket,
    NoSuchUpload,
    /// A listed part is missing or its ETag differs.
    InvalidPart(i32),
    InvalidPartOrder,
    /// A part other than the last is smaller than the minimum.
    EntityTooSmall(i32),
    /// The object a write would replace fails its If-Match/If-None-Match.
    PreconditionFailed,
}

#[derive(Debug, Clone)]
pub struct BucketRow {
    pub id: String,
    pub name: String,
    pub project_id: Option<String>,
    pub binding_id: Option<String>,
    /// The binding's environment name, for a bucket made by attach.
    pub environment: Option<String>,
    pub visibility: String,
    pub region: String,
    pub created_at: DateTime<Utc>,
}

impl BucketRow {
    pub fn is_public(&self) -> bool {
        self.visibility == "public"
    }
}

#[derive(Debug, Clone)]
pub struct NewBucket<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub project_id: Option<&'a str>,
    pub binding_id: Option<&'a str>,
    pub visibility: &'a str,
}

/// One object: its attributes and the chunks its bytes are made of.
#[derive(Debug, Clone)]
pub struct ObjectRow {
    pub key: String,
    pub size: i64,
    pub etag: String,
    pub content_type: String,
    pub metadata: Value,
    pub chunks: Vec<Vec<u8>>,
    pub chunk_sizes: Vec<i64>,
    pub last_modified: DateTime<Utc>,
    /// The bytes of a small object's one chunk, kept in its row (read with
    /// [`Store::object`] only).
    pub inline: Option<Vec<u8>>,
}

/// What an object (or a part) is made of.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    pub chunks: Vec<Vec<u8>>,
    pub chunk_sizes: Vec<i64>,
}

impl Manifest {
    pub fn size(&self) -> i64 {
        self.chunk_sizes.iter().sum()
    }
}

#[derive(Debug, Clone)]
pub struct NewObject<'a> {
    pub bucket_id: &'a str,
    pub key: &'a str,
    pub etag: &'a str,
    pub content_type: &'a str,
    pub metadata: &'a Value,
    pub manifest: &'a Manifest,
    /// Checked against the object the write replaces, under the key's lock
    /// and in the write's transaction, so no other write slips between.
    pub condition: PutCondition<'a>,
}

/// A write's precondition (If-Match / If-None-Match): an ETag without
/// quotes, or `*` for any object.
#[derive(Debug, Clone, Copy, Default)]
pub struct PutCondition<'a> {
    pub if_match: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
}

impl PutCondition<'_> {
    fn is_none(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Whether it holds for the object now at the key (its ETag, if any).
    fn holds(&self, current: Option<&str>) -> bool {
        let names = |want: &str| current.is_some_and(|etag| want == "*" || want == etag);
        self.if_match.is_none_or(names) && !self.if_none_match.is_some_and(names)
    }
}

/// Checks `object`'s condition, holding its key's lock until the
/// transaction `client` is in ends.
async fn check_condition(client: &impl GenericClient, object: &NewObject<'_>) -> Result<()> {
    if object.condition.is_none() {
        return Ok(());
    }
    lock_key(client, object.bucket_id, object.key).await?;
    let current: Option<String> = client
        .query_opt(
            "SELECT etag FROM storage_objects WHERE bucket_id = $1 AND key = $2",
            &[&object.bucket_id, &object.key],
        )
        .await?
        .map(|row| row.get(0));
    if !object.condition.holds(current.as_deref()) {
        return Err(rule(StorageRule::PreconditionFailed));
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct UploadRow {
    pub id: String,
    pub bucket_id: String,
    pub key: String,
    pub content_type: String,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct PartRow {
    pub part_number: i32,
    pub size: i64,
    pub md5: String,
    pub manifest: Manifest,
    pub last_modified: DateTime<Utc>,
    /// What the part keeps beside its bytes (an encryption IV, checksums).
    pub meta: Value,
}

const BUCKET_COLUMNS: &str = "id, name, project_id, binding_id, visibility, region, created_at,
     (SELECT e.name FROM bindings b JOIN environments e ON e.id = b.environment_id
      JOIN data_services s ON s.id = b.service_id
      WHERE b.id = storage_buckets.binding_id AND NOT s.standalone) AS environment_name";
const OBJECT_COLUMNS: &str =
    "key, size, etag, content_type, metadata, chunks, chunk_sizes, last_modified";

fn bucket_from_row(row: &Row) -> BucketRow {
    BucketRow {
        id: row.get(0),
        name: row.get(1),
        project_id: row.get(2),
        binding_id: row.get(3),
        visibility: row.get(4),
        region: row.get(5),
        created_at: row.get(6),
        environment: row.get(7),
    }
}

fn object_from_row(row: &Row) -> ObjectRow {
    ObjectRow {
        key: row.get(0),
        size: row.get(1),
        etag: row.get(2),
        content_type: row.get(3),
        metadata: row.get(4),
        chunks: row.get(5),
        chunk_sizes: row.get(6),
        last_modified: row.get(7),
        inline: None,
    }
}

fn upload_from_row(row: &Row) -> UploadRow {
    UploadRow {
        id: row.get(0),
        bucket_id: row.get(1),
        key: row.get(2),
        content_type: row.get(3),
        metadata: row.get(4),
        created_at: row.get(5),
    }
}

fn part_from_row(row: &Row) -> PartRow {
    PartRow {
        part_number: row.get(0),
        size: row.get(1),
        md5: row.get(2),
        manifest: Manifest {
            chunks: row.get(3),
            chunk_sizes: row.get(4),
        },
        last_modified: row.get(5),
        meta: row.get(6),
    }
}

fn rule(rule: StorageRule) -> StoreError {
    StoreError::Storage(rule)
}

/// Counts one more reference to each chunk (a chunk listed twice counts
/// twice); fails if any chunk has no row (it was collected).
async fn add_references(client: &impl GenericClient, chunks: &[Vec<u8>]) -> Result<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    let statement = client
        .prepare_cached("SELECT mds_storage_retain($1)")
        .await?;
    let row = client.query_one(&statement, &[&chunks]).await?;
    if !row.get::<_, bool>(0) {
        return Err(rule(StorageRule::BlobMissing));
    }
    Ok(())
}

/// Drops references; a chunk left without any stays for `grace_secs` so
/// that reads which already hold its manifest can finish.
async fn drop_references(
    client: &impl GenericClient,
    chunks: &[Vec<u8>],
    grace_secs: f64,
) -> Result<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    let statement = client
        .prepare_cached("SELECT mds_storage_release($1, $2)")
        .await?;
    client
        .query_one(&statement, &[&chunks, &grace_secs])
        .await?;
    Ok(())
}

/// Serialises writers of one key, so that the chunks of the version they
/// replace are released exactly once.
async fn lock_key(client: &impl GenericClient, bucket_id: &str, key: &str) -> Result<()> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 6))",
            &[&bucket_id, &key],
        )
        .await?;
    Ok(())
}

/// Writes an object version over whatever the key held: one statement
/// (migration 0007), atomic on its own or inside a transaction.
async fn put_object_row(
    client: &impl GenericClient,
    object: &NewObject<'_>,
    grace_secs: f64,
) -> Result<ObjectRow> {
    let statement = client
        .prepare_cached("SELECT mds_storage_put_object($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .await?;
    let size = object.manifest.size();
    let row = client
        .query_one(
            &statement,
            &[
                &object.bucket_id,
                &object.key,
                &size,
                &object.etag,
                &object.content_type,
                object.metadata,
                &object.manifest.chunks,
                &object.manifest.chunk_sizes,
                &grace_secs,
            ],
        )
        .await?;
    Ok(ObjectRow {
        key: object.key.to_string(),
        size,
        etag: object.etag.to_string(),
        content_type: object.content_type.to_string(),
        metadata: object.metadata.clone(),
        chunks: object.manifest.chunks.clone(),
        chunk_sizes: object.manifest.chunk_sizes.clone(),
        last_modified: row.get(0),
        inline: None,
    })
}

impl Store {
    pub async fn create_bucket(&self, bucket: &NewBucket<'_>) -> Result<BucketRow> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO storage_buckets (id, name, project_id, binding_id, visibility)
                     VALUES ($1, $2, $3, $4, $5) RETURNING {BUCKET_COLUMNS}"
                ),
                &[
                    &bucket.id,
                    &bucket.name,
                    &bucket.project_id,
                    &bucket.binding_id,
                    &bucket.visibility,
                ],
            )
            .await?;
        Ok(bucket_from_row(&row))
    }

    pub async fn bucket(&self, id: &str) -> Result<Option<BucketRow>> {
        self.bucket_where("id", id).await
    }

    pub async fn bucket_by_name(&self, name: &str) -> Result<Option<BucketRow>> {
        self.bucket_where("name", name).await
    }

    pub async fn binding_bucket(&self, binding_id: &str) -> Result<Option<BucketRow>> {
        self.bucket_where("binding_id", binding_id).await
    }

    /// The bucket whose unique `column` (a constant, never input) is `value`.
    async fn bucket_where(&self, column: &'static str, value: &str) -> Result<Option<BucketRow>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {BUCKET_COLUMNS} FROM storage_buckets WHERE {column} = $1"
            ))
            .await?;
        let row = client.query_opt(&statement, &[&value]).await?;
        Ok(row.as_ref().map(bucket_from_row))
    }

    /// Buckets by name; of one project when `project_id` is given.
    pub async fn buckets(&self, project_id: Option<&str>) -> Result<Vec<BucketRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {BUCKET_COLUMNS} FROM storage_buckets
                     WHERE $1::text IS NULL OR project_id = $1 ORDER BY name"
                ),
                &[&project_id],
            )
            .await?;
        Ok(rows.iter().map(bucket_from_row).collect())
    }

    /// (object count, total bytes)
    pub async fn bucket_usage(&self, bucket_id: &str) -> Result<(i64, i64)> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*), coalesce(sum(size), 0)::bigint FROM storage_objects
                 WHERE bucket_id = $1",
                &[&bucket_id],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    pub async fn set_bucket_visibility(&self, bucket_id: &str, visibility: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE storage_buckets SET visibility = $2 WHERE id = $1",
                &[&bucket_id, &visibility],
            )
            .await?;
        Ok(())
    }

    /// Deletes a bucket, with its unfinished multipart uploads (as S3
    /// does); one that holds objects only with `force`. Released chunks
    /// are left to the collector. Returns false if it was
    /// already gone.
    pub async fn delete_bucket(
        &self,
        bucket_id: &str,
        force: bool,
        grace_secs: f64,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let locked = tx
            .query_opt(
                "SELECT 1 FROM storage_buckets WHERE id = $1 FOR UPDATE",
                &[&bucket_id],
            )
            .await?;
        if locked.is_none() {
            return Ok(false);
        }
        let busy = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM storage_objects WHERE bucket_id = $1)",
                &[&bucket_id],
            )
            .await?;
        if busy.get::<_, bool>(0) && !force {
            return Err(rule(StorageRule::BucketNotEmpty));
        }
        let released = tx
            .query(
                "WITH parts AS (
                    DELETE FROM storage_upload_parts WHERE upload_id IN
                        (SELECT id FROM storage_uploads WHERE bucket_id = $1)
                    RETURNING chunks),
                 objects AS (DELETE FROM storage_objects WHERE bucket_id = $1 RETURNING chunks)
                 SELECT unnest(chunks) FROM parts UNION ALL SELECT unnest(chunks) FROM objects",
                &[&bucket_id],
            )
            .await?;
        let chunks: Vec<Vec<u8>> = released.iter().map(|r| r.get(0)).collect();
        drop_references(&tx, &chunks, grace_secs).await?;
        tx.execute(
            "DELETE FROM storage_uploads WHERE bucket_id = $1",
            &[&bucket_id],
        )
        .await?;
        tx.execute("DELETE FROM storage_buckets WHERE id = $1", &[&bucket_id])
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Pins chunks (hash, size) for `secs` before they are written to the
    /// blob backend, creating their rows; returns the hashes that already
    /// had a row (their bytes may already be stored).
    pub async fn pin_blobs(&self, blobs: &[(Vec<u8>, i64)], secs: f64) -> Result<Vec<Vec<u8>>> {
        let mut unique: Vec<&(Vec<u8>, i64)> = blobs.iter().collect();
        unique.sort_by(|a, b| a.0.cmp(&b.0));
        unique.dedup_by(|a, b| a.0 == b.0);
        let hashes: Vec<&[u8]> = unique.iter().map(|b| b.0.as_slice()).collect();
        let sizes: Vec<i64> = unique.iter().map(|b| b.1).collect();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO storage_blobs (hash, size, pinned_until)
                 SELECT h, s, now() + make_interval(secs => $3)
                 FROM unnest($1::bytea[], $2::bigint[]) AS t (h, s)
                 ON CONFLICT (hash) DO UPDATE
                    SET pinned_until = greatest(storage_blobs.pinned_until, EXCLUDED.pinned_until)
                 RETURNING hash, xmax <> 0",
            )
            .await?;
        let rows = client.query(&statement, &[&hashes, &sizes, &secs]).await?;
        Ok(rows
            .iter()
            .filter(|r| r.get::<_, bool>(1))
            .map(|r| r.get(0))
            .collect())
    }

    /// Commits a small object whose one chunk (`hash`, `data`) is kept in
    /// its row: one statement, no file.
    pub async fn put_inline_object(
        &self,
        object: &NewObject<'_>,
        hash: &[u8],
        data: &[u8],
        grace_secs: f64,
    ) -> Result<ObjectRow> {
        const PUT: &str = "SELECT mds_storage_put_inline_object($1, $2, $3, $4, $5, $6, $7, $8)";
        let mut client = self.client().await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &object.bucket_id,
            &object.key,
            &object.etag,
            &object.content_type,
            object.metadata,
            &hash,
            &data,
            &grace_secs,
        ];
        let row = if object.condition.is_none() {
            let statement = client.prepare_cached(PUT).await?;
            client.query_one(&statement, &params).await?
        } else {
            let tx = client.transaction().await?;
            check_condition(&tx, object).await?;
            let row = tx.query_one(PUT, &params).await?;
            tx.commit().await?;
            row
        };
        Ok(ObjectRow {
            key: object.key.to_string(),
            size: data.len() as i64,
            etag: object.etag.to_string(),
            content_type: object.content_type.to_string(),
            metadata: object.metadata.clone(),
            chunks: vec![hash.to_vec()],
            chunk_sizes: vec![data.len() as i64],
            last_modified: row.get(0),
            inline: None,
        })
    }

    /// Commits an object version whose chunks are pinned and stored.
    pub async fn put_object(&self, object: &NewObject<'_>, grace_secs: f64) -> Result<ObjectRow> {
        let mut client = self.client().await?;
        if object.condition.is_none() {
            return put_object_row(&client, object, grace_secs).await;
        }
        let tx = client.transaction().await?;
        check_condition(&tx, object).await?;
        let row = put_object_row(&tx, object, grace_secs).await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn object(&self, bucket_id: &str, key: &str) -> Result<Option<ObjectRow>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS},
                        CASE WHEN cardinality(chunks) = 1 THEN
                            (SELECT inline FROM storage_blobs WHERE hash = chunks[1])
                        END
                 FROM storage_objects WHERE bucket_id = $1 AND key = $2"
            ))
            .await?;
        let row = client.query_opt(&statement, &[&bucket_id, &key]).await?;
        Ok(row.map(|row| ObjectRow {
            inline: row.get(8),
            ..object_from_row(&row)
        }))
    }

    /// Deletes an object; returns whether it existed.
    pub async fn delete_object(&self, bucket_id: &str, key: &str, grace_secs: f64) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_key(&tx, bucket_id, key).await?;
        let row = tx
            .query_opt(
                "DELETE FROM storage_objects WHERE bucket_id = $1 AND key = $2 RETURNING chunks",
                &[&bucket_id, &key],
            )
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let chunks: Vec<Vec<u8>> = row.get(0);
        drop_references(&tx, &chunks, grace_secs).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Up to `limit` objects whose keys start with `prefix` and sort after
    /// `after`, in key order.
    pub async fn list_objects(
        &self,
        bucket_id: &str,
        prefix: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ObjectRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {OBJECT_COLUMNS} FROM storage_objects
                     WHERE bucket_id = $1 AND key >= $2 AND key > $3 AND starts_with(key, $2)
                     ORDER BY key LIMIT $4"
                ),
                &[&bucket_id, &prefix, &after, &limit],
            )
            .await?;
        Ok(rows.iter().map(object_from_row).collect())
    }

    pub async fn create_upload(&self, upload: &UploadRow) -> Result<()> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO storage_uploads (id, bucket_id, key, content_type, metadata)
                 SELECT $1, $2, $3, $4, $5 WHERE EXISTS
                    (SELECT 1 FROM storage_buckets WHERE id = $2)",
                &[
                    &upload.id,
                    &upload.bucket_id,
                    &upload.key,
                    &upload.content_type,
                    &upload.metadata,
                ],
            )
            .await?;
        if n == 0 {
            return Err(rule(StorageRule::NoSuchBucket));
        }
        Ok(())
    }

    pub async fn upload(&self, bucket_id: &str, upload_id: &str) -> Result<Option<UploadRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, bucket_id, key, content_type, metadata, created_at
                 FROM storage_uploads WHERE id = $1 AND bucket_id = $2",
                &[&upload_id, &bucket_id],
            )
            .await?;
        Ok(row.as_ref().map(upload_from_row))
    }

    /// Uploads in progress in a bucket, by key.
    pub async fn uploads(&self, bucket_id: &str, prefix: &str) -> Result<Vec<UploadRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, bucket_id, key, content_type, metadata, created_at
                 FROM storage_uploads WHERE bucket_id = $1 AND starts_with(key, $2)
                 ORDER BY key, created_at LIMIT 1000",
                &[&bucket_id, &prefix],
            )
            .await?;
        Ok(rows.iter().map(upload_from_row).collect())
    }

    /// Records a part (replacing an earlier one with the same number).
    pub async fn put_part(
        &self,
        upload_id: &str,
        part_number: i32,
        md5: &str,
        manifest: &Manifest,
        meta: &Value,
        grace_secs: f64,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let upload = tx
            .query_opt(
                "SELECT 1 FROM storage_uploads WHERE id = $1 FOR SHARE",
                &[&upload_id],
            )
            .await?;
        if upload.is_none() {
            return Err(rule(StorageRule::NoSuchUpload));
        }
        lock_key(&tx, upload_id, &part_number.to_string()).await?;
        add_references(&tx, &manifest.chunks).await?;
        let old = tx
            .query_opt(
                "DELETE FROM storage_upload_parts WHERE upload_id = $1 AND part_number = $2
                 RETURNING chunks",
                &[&upload_id, &part_number],
            )
            .await?;
        if let Some(old) = old {
            let chunks: Vec<Vec<u8>> = old.get(0);
            drop_references(&tx, &chunks, grace_secs).await?;
        }
        tx.execute(
            "INSERT INTO storage_upload_parts
                 (upload_id, part_number, size, md5, chunks, chunk_sizes, meta)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &upload_id,
                &part_number,
                &manifest.size(),
                &md5,
                &manifest.chunks,
                &manifest.chunk_sizes,
                meta,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn parts(&self, upload_id: &str) -> Result<Vec<PartRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT part_number, size, md5, chunks, chunk_sizes, last_modified, meta
                 FROM storage_upload_parts WHERE upload_id = $1 ORDER BY part_number",
                &[&upload_id],
            )
            .await?;
        Ok(rows.iter().map(part_from_row).collect())
    }

    /// Completes a multipart upload with the listed (part number, MD5 hex)
    /// pairs: the object is the parts' chunks in order; every part's own
    /// references (listed or not) are released. `etag` computes the
    /// object's ETag from the parts used.
    pub async fn complete_upload(
        &self,
        upload: &UploadRow,
        listed: &[(i32, String)],
        min_part_size: i64,
        etag: impl FnOnce(&[PartRow]) -> String,
        condition: PutCondition<'_>,
        grace_secs: f64,
    ) -> Result<ObjectRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let gone = tx
            .query_opt(
                "SELECT 1 FROM storage_uploads WHERE id = $1 FOR UPDATE",
                &[&upload.id],
            )
            .await?
            .is_none();
        if gone {
            return Err(rule(StorageRule::NoSuchUpload));
        }
        let rows = tx
            .query(
                "SELECT part_number, size, md5, chunks, chunk_sizes, last_modified, meta
                 FROM storage_upload_parts WHERE upload_id = $1 ORDER BY part_number",
                &[&upload.id],
            )
            .await?;
        let parts: Vec<PartRow> = rows.iter().map(part_from_row).collect();
        let mut used = Vec::with_capacity(listed.len());
        let mut previous = 0;
        for (number, md5) in listed {
            if *number <= previous {
                return Err(rule(StorageRule::InvalidPartOrder));
            }
            previous = *number;
            match parts.iter().find(|p| p.part_number == *number) {
                Some(part) if part.md5.eq_ignore_ascii_case(md5) => used.push(part.clone()),
                _ => return Err(rule(StorageRule::InvalidPart(*number))),
            }
        }
        if let Some((_, init)) = used.split_last() {
            if let Some(small) = init.iter().find(|p| p.size < min_part_size) {
                return Err(rule(StorageRule::EntityTooSmall(small.part_number)));
            }
        }
        let mut manifest = Manifest::default();
        for part in &used {
            manifest.chunks.extend(part.manifest.chunks.iter().cloned());
            manifest
                .chunk_sizes
                .extend(part.manifest.chunk_sizes.iter().copied());
        }
        let etag = etag(&used);
        let object = NewObject {
            bucket_id: &upload.bucket_id,
            key: &upload.key,
            etag: &etag,
            content_type: &upload.content_type,
            metadata: &upload.metadata,
            manifest: &manifest,
            condition,
        };
        check_condition(&tx, &object).await?;
        let object = put_object_row(&tx, &object, grace_secs).await?;
        let released: Vec<Vec<u8>> = parts
            .iter()
            .flat_map(|p| p.manifest.chunks.iter().cloned())
            .collect();
        drop_references(&tx, &released, grace_secs).await?;
        tx.execute(
            "DELETE FROM storage_upload_parts WHERE upload_id = $1",
            &[&upload.id],
        )
        .await?;
        tx.execute("DELETE FROM storage_uploads WHERE id = $1", &[&upload.id])
            .await?;
        tx.commit().await?;
        Ok(object)
    }

    /// Abandons a multipart upload; returns whether it existed.
    pub async fn abort_upload(&self, upload_id: &str, grace_secs: f64) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let gone = tx
            .query_opt(
                "SELECT 1 FROM storage_uploads WHERE id = $1 FOR UPDATE",
                &[&upload_id],
            )
            .await?
            .is_none();
        if gone {
            return Ok(false);
        }
        let rows = tx
            .query(
                "DELETE FROM storage_upload_parts WHERE upload_id = $1 RETURNING chunks",
                &[&upload_id],
            )
            .await?;
        let chunks: Vec<Vec<u8>> = rows
            .iter()
            .flat_map(|r| r.get::<_, Vec<Vec<u8>>>(0))
            .collect();
        drop_references(&tx, &chunks, grace_secs).await?;
        tx.execute("DELETE FROM storage_uploads WHERE id = $1", &[&upload_id])
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Collects up to `limit` unreferenced, unpinned chunks: `delete` removes
    /// their bytes (returning the hashes it removed) while their rows stay
    /// locked, and only those rows are deleted. Returns how many went.
    pub async fn collect_blobs<F, Fut>(&self, limit: i64, delete: F) -> Result<usize>
    where
        F: FnOnce(Vec<Vec<u8>>) -> Fut,
        Fut: std::future::Future<Output = Vec<Vec<u8>>>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "SELECT hash FROM storage_blobs WHERE refcount = 0 AND pinned_until < now()
                 LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&limit],
            )
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let hashes: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
        let deleted = delete(hashes).await;
        tx.execute(
            "DELETE FROM storage_blobs WHERE hash = ANY($1)",
            &[&deleted],
        )
        .await?;
        tx.commit().await?;
        Ok(deleted.len())
    }

    /// Whether a chunk has a row (is pinned or referenced).
    pub async fn blob_known(&self, hash: &[u8]) -> Result<bool> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT 1 FROM storage_blobs WHERE hash = $1", &[&hash])
            .await?;
        Ok(row.is_some())
    }

    /// (chunks, bytes) held in the blob store's index.
    pub async fn blob_usage(&self) -> Result<(i64, i64)> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*), coalesce(sum(size), 0)::bigint FROM storage_blobs",
                &[],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }
}
