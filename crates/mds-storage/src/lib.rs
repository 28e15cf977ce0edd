//! Storage: objects whose bytes live as content-addressed chunks.
//!
//! A write streams the body into fsynced chunk files ([`ingest`]), pins the
//! chunks in the index, names them in the blob backend ([`blob`]), then
//! commits the object's manifest in one transaction. A read loads each
//! chunk whole and checks it against its address before sending a byte of
//! it. The collector ([`Storage::collect_garbage`]) removes chunks nothing
//! refers to. The MIOSA routes (in `mds-server`) and the S3 gateway
//! ([`s3`]) both sit on [`Storage`].

pub mod blob;
pub mod ingest;
pub mod names;
pub mod presign;
pub mod s3;
pub mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use mds_store::{
    Manifest, NewObject, ObjectRow, PartRow, PutCondition, Store, StoreError, UploadRow,
};
use serde_json::Value;

pub use blob::{Blobs, FsBlobs, Hash, RemoteBlobs};
pub use mds_store::{BucketRow, StorageRule};
pub use names::{check_bucket_name, check_key, KeyProblem};
pub use snapshot::{BucketIndex, IndexReport, IndexedObject, RestoreReport};

/// Chunks read and verified ahead of the one being sent.
const READ_AHEAD: usize = 3;

/// Objects up to this size keep their one chunk in the index row: a small
/// PUT is then one statement and no file.
pub const INLINE_MAX: usize = 32 << 10;

/// S3's smallest part (all but the last of a multipart upload).
pub const MIN_PART_SIZE: i64 = 5 << 20;

/// What callers branch on; the server maps each to an HTTP status and a
/// MIOSA or S3 error code.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("no such key")]
    NoSuchKey,
    #[error("no such upload")]
    NoSuchUpload,
    #[error("the bucket is not empty; delete its objects first or force the delete")]
    BucketNotEmpty,
    #[error("a bucket with this name already exists")]
    BucketExists,
    #[error("invalid bucket name: {0}")]
    InvalidBucketName(String),
    #[error("{0}")]
    InvalidKey(KeyProblem),
    #[error("the object is larger than this server's limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the body's MD5 does not match the Content-MD5 header")]
    BadDigest,
    #[error("part {0} was not uploaded or its ETag does not match")]
    InvalidPart(i32),
    #[error("parts must be listed in ascending order")]
    InvalidPartOrder,
    #[error("part {0} is smaller than the 5 MiB minimum for all parts but the last")]
    EntityTooSmall(i32),
    #[error("the requested range is not satisfiable")]
    InvalidRange,
    /// The request body broke off or could not be decoded.
    #[error("reading the request body failed: {0}")]
    Body(std::io::Error),
    /// Stored bytes failed verification or the disk failed.
    #[error("storage I/O: {0}")]
    Io(std::io::Error),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for StorageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Storage(rule) => match rule {
                StorageRule::NoSuchBucket => StorageError::NoSuchBucket,
                StorageRule::NoSuchUpload => StorageError::NoSuchUpload,
                StorageRule::BucketNotEmpty => StorageError::BucketNotEmpty,
                StorageRule::InvalidPart(n) => StorageError::InvalidPart(n),
                StorageRule::InvalidPartOrder => StorageError::InvalidPartOrder,
                StorageRule::EntityTooSmall(n) => StorageError::EntityTooSmall(n),
                // Only the S3 endpoint writes with conditions; it answers 412.
                StorageRule::PreconditionFailed => {
                    StorageError::Store(StoreError::Storage(StorageRule::PreconditionFailed))
                }
                StorageRule::BlobMissing => StorageError::Store(StoreError::Unavailable(
                    "a chunk was collected while this write committed; retry".to_string(),
                )),
            },
            StoreError::Conflict { constraint } if constraint == "storage_buckets_name_key" => {
                StorageError::BucketExists
            }
            other => StorageError::Store(other),
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError::Io(e)
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `DIR/storage`: chunk files and temporary files.
    pub dir: PathBuf,
    pub max_object_bytes: u64,
    /// How long a chunk stays after its last reference goes (reads in
    /// flight) and while a write commits.
    pub grace: Duration,
    /// Chunks on an S3-compatible service instead of `dir/blobs`:
    /// `http(s)://KEY:SECRET@host:port/bucket[/prefix]`.
    pub remote: Option<String>,
}

/// What a write produced, before it is committed.
struct Written {
    manifest: Manifest,
    md5: [u8; 16],
    /// A small body, not yet stored anywhere: its commit stores it.
    inline: Option<(Hash, Bytes)>,
}

/// A body being sent: its first piece is already read and verified, so a
/// missing or corrupt object fails before any header goes out.
pub type ObjectStream = BoxStream<'static, std::io::Result<Bytes>>;

#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    blobs: Blobs,
    config: StorageConfig,
    presigner: presign::Presigner,
    /// SSE-S3 object keys are derived from this (itself derived from the
    /// master key), each with the object's own random IV.
    sse_root: zeroize::Zeroizing<[u8; 32]>,
}

/// The ETag of a multipart object: MD5 of the parts' MD5s, then `-N`.
pub fn multipart_etag(parts: &[PartRow]) -> String {
    let mut md5 = Md5::new();
    for part in parts {
        md5.update(hex::decode(&part.md5).unwrap_or_default());
    }
    format!("{}-{}", hex::encode(md5.finalize()), parts.len())
}

impl Storage {
    pub fn open(
        store: Store,
        config: StorageConfig,
        master: &mds_crypto::MasterKey,
    ) -> std::io::Result<Self> {
        let blobs = match &config.remote {
            Some(url) => {
                Blobs::Remote(RemoteBlobs::open(url, &config.dir).map_err(std::io::Error::other)?)
            }
            None => Blobs::Fs(FsBlobs::open(&config.dir)?),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                blobs,
                presigner: presign::Presigner::new(master),
                sse_root: master.derive("storage:sse-s3"),
                config,
            }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn sse_root(&self) -> &[u8; 32] {
        &self.inner.sse_root
    }

    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    pub fn presigner(&self) -> &presign::Presigner {
        &self.inner.presigner
    }

    fn grace_secs(&self) -> f64 {
        self.inner.config.grace.as_secs_f64()
    }

    /// Streams `body` into durable chunks, runs `check` on the body's MD5
    /// (a digest or checksum mismatch stops here, before anything is
    /// named), then names the chunks in the blob backend; nothing refers to
    /// them yet.
    async fn write<S, T>(
        &self,
        body: S,
        inline_max: usize,
        check: impl FnOnce([u8; 16]) -> Result<T>,
    ) -> Result<(Written, T)>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        let ingested = ingest::ingest(
            body,
            self.inner.blobs.temp_dir(),
            self.inner.config.max_object_bytes,
            inline_max,
        )
        .await?;
        let checked = check(ingested.md5)?;
        if let Some(data) = ingested.inline {
            let hash = *blake3::hash(&data).as_bytes();
            let manifest = Manifest {
                chunks: vec![hash.to_vec()],
                chunk_sizes: vec![data.len() as i64],
            };
            return Ok((
                Written {
                    manifest,
                    md5: ingested.md5,
                    inline: Some((hash, data)),
                },
                checked,
            ));
        }
        let pins: Vec<(Vec<u8>, i64)> = ingested
            .chunks
            .iter()
            .map(|c| (c.hash.to_vec(), c.size as i64))
            .collect();
        // Pinned chunks survive the collector until the commit below.
        self.inner
            .store
            .pin_blobs(&pins, self.grace_secs() + 60.0)
            .await?;
        let mut manifest = Manifest::default();
        for chunk in &ingested.chunks {
            self.inner.blobs.store(chunk).await?;
            manifest.chunks.push(chunk.hash.to_vec());
            manifest.chunk_sizes.push(chunk.size as i64);
        }
        Ok((
            Written {
                manifest,
                md5: ingested.md5,
                inline: None,
            },
            checked,
        ))
    }

    /// Stores an object (replacing any at `key`); returns it as committed.
    /// `finish` sees the body's MD5 once it is all received and returns the
    /// object's metadata, or an error that drops the write.
    pub async fn put_object<S>(
        &self,
        bucket: &BucketRow,
        key: &str,
        content_type: &str,
        body: S,
        finish: impl FnOnce([u8; 16]) -> Result<Value>,
    ) -> Result<ObjectRow>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        self.put_object_if(
            bucket,
            key,
            content_type,
            body,
            PutCondition::default(),
            finish,
        )
        .await
    }

    /// [`put_object`](Self::put_object) if `condition` holds for the object
    /// it replaces when it commits (checked atomically with the commit).
    pub async fn put_object_if<S>(
        &self,
        bucket: &BucketRow,
        key: &str,
        content_type: &str,
        body: S,
        condition: PutCondition<'_>,
        finish: impl FnOnce([u8; 16]) -> Result<Value>,
    ) -> Result<ObjectRow>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        check_key(key).map_err(StorageError::InvalidKey)?;
        let (written, metadata) = self.write(body, INLINE_MAX, finish).await?;
        let etag = hex::encode(written.md5);
        let object = NewObject {
            bucket_id: &bucket.id,
            key,
            etag: &etag,
            content_type,
            metadata: &metadata,
            manifest: &written.manifest,
            condition,
        };
        let store = &self.inner.store;
        Ok(match &written.inline {
            Some((hash, data)) => {
                store
                    .put_inline_object(&object, hash, data, self.grace_secs())
                    .await?
            }
            None => store.put_object(&object, self.grace_secs()).await?,
        })
    }

    /// Copies an object's manifest to another key: no bytes move.
    pub async fn copy_object(
        &self,
        source: &ObjectRow,
        bucket: &BucketRow,
        key: &str,
        content_type: &str,
        metadata: &Value,
    ) -> Result<ObjectRow> {
        check_key(key).map_err(StorageError::InvalidKey)?;
        let manifest = Manifest {
            chunks: source.chunks.clone(),
            chunk_sizes: source.chunk_sizes.clone(),
        };
        Ok(self
            .inner
            .store
            .put_object(
                &NewObject {
                    bucket_id: &bucket.id,
                    key,
                    etag: &source.etag,
                    content_type,
                    metadata,
                    manifest: &manifest,
                    condition: PutCondition::default(),
                },
                self.grace_secs(),
            )
            .await?)
    }

    pub async fn object(&self, bucket: &BucketRow, key: &str) -> Result<ObjectRow> {
        self.inner
            .store
            .object(&bucket.id, key)
            .await?
            .ok_or(StorageError::NoSuchKey)
    }

    pub async fn delete_object(&self, bucket: &BucketRow, key: &str) -> Result<bool> {
        Ok(self
            .inner
            .store
            .delete_object(&bucket.id, key, self.grace_secs())
            .await?)
    }

    /// The bytes `range` (inclusive; all when `None`) of `object`, verified
    /// chunk by chunk. The first chunk is read before this returns.
    pub async fn read(
        &self,
        object: &ObjectRow,
        range: Option<(u64, u64)>,
    ) -> Result<ObjectStream> {
        let size = object.size as u64;
        let (start, end) = match range {
            Some((start, end)) if start <= end && end < size => (start, end + 1),
            Some(_) => return Err(StorageError::InvalidRange),
            None => (0, size),
        };
        if let (Some(data), [hash]) = (&object.inline, object.chunks.as_slice()) {
            let hash = blob::hash_from_slice(hash).ok_or_else(|| {
                StorageError::Io(std::io::Error::other("malformed chunk address in manifest"))
            })?;
            blob::verify(&hash, data)?;
            let piece = Bytes::copy_from_slice(&data[start as usize..end as usize]);
            return Ok(stream::once(async move { Ok(piece) }).boxed());
        }
        // (chunk, from, to) within each chunk that overlaps [start, end).
        let mut pieces = Vec::new();
        let mut offset = 0u64;
        for (hash, len) in object.chunks.iter().zip(&object.chunk_sizes) {
            let len = *len as u64;
            let (chunk_start, chunk_end) = (offset, offset + len);
            offset = chunk_end;
            if chunk_end <= start || chunk_start >= end {
                continue;
            }
            let hash = blob::hash_from_slice(hash).ok_or_else(|| {
                StorageError::Io(std::io::Error::other("malformed chunk address in manifest"))
            })?;
            let from = start.saturating_sub(chunk_start) as usize;
            let to = (end.min(chunk_end) - chunk_start) as usize;
            pieces.push((hash, from, to));
        }
        let blobs = self.inner.blobs.clone();
        let read_piece = move |(hash, from, to): (Hash, usize, usize)| {
            let blobs = blobs.clone();
            async move {
                let bytes = blobs.read(hash).await?;
                if to > bytes.len() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "chunk shorter than its manifest says",
                    ));
                }
                Ok(bytes.slice(from..to))
            }
        };
        let mut pieces = pieces.into_iter();
        let Some(first) = pieces.next() else {
            return Ok(stream::empty().boxed());
        };
        let first = read_piece(first).await?;
        let rest = stream::iter(pieces).map(read_piece).buffered(READ_AHEAD);
        Ok(stream::once(async move { Ok(first) }).chain(rest).boxed())
    }

    pub async fn create_upload(&self, upload: &UploadRow) -> Result<()> {
        check_key(&upload.key).map_err(StorageError::InvalidKey)?;
        Ok(self.inner.store.create_upload(upload).await?)
    }

    pub async fn upload(&self, bucket: &BucketRow, upload_id: &str) -> Result<UploadRow> {
        self.inner
            .store
            .upload(&bucket.id, upload_id)
            .await?
            .ok_or(StorageError::NoSuchUpload)
    }

    /// Stores one part; returns its MD5 (hex), the part's ETag. `finish`
    /// works as in [`put_object`](Self::put_object), and returns what the
    /// part keeps beside its bytes.
    pub async fn put_part<S>(
        &self,
        upload: &UploadRow,
        part_number: i32,
        body: S,
        finish: impl FnOnce([u8; 16]) -> Result<Value>,
    ) -> Result<String>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        // Parts are always files: they are joined into objects later.
        let (written, meta) = self.write(body, 0, finish).await?;
        let md5 = hex::encode(written.md5);
        self.inner
            .store
            .put_part(
                &upload.id,
                part_number,
                &md5,
                &written.manifest,
                &meta,
                self.grace_secs(),
            )
            .await?;
        Ok(md5)
    }

    /// Completes an upload with the `listed` parts, if `condition` holds
    /// for the object it replaces.
    pub async fn complete_upload(
        &self,
        upload: &UploadRow,
        listed: &[(i32, String)],
        condition: PutCondition<'_>,
    ) -> Result<ObjectRow> {
        Ok(self
            .inner
            .store
            .complete_upload(
                upload,
                listed,
                MIN_PART_SIZE,
                multipart_etag,
                condition,
                self.grace_secs(),
            )
            .await?)
    }

    pub async fn abort_upload(&self, upload: &UploadRow) -> Result<bool> {
        Ok(self
            .inner
            .store
            .abort_upload(&upload.id, self.grace_secs())
            .await?)
    }

    pub async fn delete_bucket(&self, bucket: &BucketRow, force: bool) -> Result<bool> {
        Ok(self
            .inner
            .store
            .delete_bucket(&bucket.id, force, self.grace_secs())
            .await?)
    }

    /// Deletes every chunk nothing refers to; returns how many went.
    pub async fn collect_garbage(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let blobs = self.inner.blobs.clone();
            let n = self
                .inner
                .store
                .collect_blobs(1000, |hashes| async move {
                    let mut deleted = Vec::with_capacity(hashes.len());
                    for h in hashes {
                        let gone = match blob::hash_from_slice(&h) {
                            Some(hash) => blobs.delete(hash).await.is_ok(),
                            None => true,
                        };
                        if gone {
                            deleted.push(h);
                        }
                    }
                    deleted
                })
                .await?;
            total += n;
            if n < 1000 {
                return Ok(total);
            }
        }
    }

    /// Runs the collector every `every` until the task is dropped.
    pub fn spawn_collector(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match this.collect_garbage().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(chunks = n, "collected unreferenced chunks"),
                    Err(e) => tracing::warn!(error = %e, "chunk collection failed; will retry"),
                }
            }
        })
    }
}
