//! Restore points of a bucket that copy no content.
//!
//! A snapshot is the bucket's index ([`BucketIndex`]: every object row, no
//! bytes) plus a hold on the chunks it lists, so the collector keeps them
//! until the hold is released. Verifying reads each listed chunk through
//! the blob read path, which checks it against its address; restoring
//! writes the rows back (see [`Store::restore_bucket_index`]).
//!
//! [`Store::restore_bucket_index`]: mds_store::Store::restore_bucket_index

use std::collections::HashSet;
use std::io::ErrorKind;

use futures_util::{stream, StreamExt, TryStreamExt};
pub use mds_store::{BucketIndex, IndexedObject, RestoreReport};

use crate::blob::{self, Hash};
use crate::{check_key, Storage, StorageError};

/// Chunks read at once while verifying (remote backends answer slowly).
const VERIFY_READ_AHEAD: usize = 4;

/// Inline chunks fetched per query while verifying (each up to 32 KiB).
const INLINE_BATCH: usize = 256;

/// What [`Storage::verify_index`] checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexReport {
    pub objects: u64,
    /// Distinct chunks, each read once and found whole.
    pub chunks: u64,
    /// Of those, kept in their index row rather than the blob backend.
    pub inline_chunks: u64,
    /// Bytes read and hashed (distinct chunks).
    pub bytes: u64,
}

/// One distinct chunk to check and the first object that lists it.
struct Wanted<'a> {
    hash: Hash,
    size: u64,
    key: &'a str,
}

fn malformed(message: String) -> StorageError {
    StorageError::Io(std::io::Error::new(
        ErrorKind::InvalidData,
        format!("bucket index: {message}"),
    ))
}

/// An error unless every object of `index` is well formed: a valid key
/// (once), 32-byte addresses, sizes that add up. An index comes from a
/// file, so it is checked before anything is written from it.
fn check_index(index: &BucketIndex) -> Result<(), StorageError> {
    let mut keys = HashSet::with_capacity(index.objects.len());
    for o in &index.objects {
        check_key(&o.key).map_err(StorageError::InvalidKey)?;
        if !keys.insert(o.key.as_str()) {
            return Err(malformed(format!("key {:?} is listed twice", o.key)));
        }
        if o.chunks.len() != o.chunk_sizes.len()
            || o.chunk_sizes.iter().any(|s| *s < 0)
            || o.chunk_sizes.iter().sum::<i64>() != o.size
        {
            return Err(malformed(format!(
                "object {:?}: its chunk sizes do not add up to its size",
                o.key
            )));
        }
        if o.chunks.iter().any(|c| blob::hash_from_slice(c).is_none()) {
            return Err(malformed(format!(
                "object {:?} names a chunk that is not a 32-byte address",
                o.key
            )));
        }
    }
    Ok(())
}

/// Names the object and chunk a verification failed on, keeping the
/// error's kind (NotFound: missing; InvalidData: corrupt).
fn chunk_error(w: &Wanted<'_>, e: std::io::Error) -> StorageError {
    let what = match e.kind() {
        ErrorKind::NotFound => "is missing".to_string(),
        ErrorKind::InvalidData => format!("is corrupt ({e})"),
        _ => format!("could not be read ({e})"),
    };
    StorageError::Io(std::io::Error::new(
        e.kind(),
        format!("object {:?}: chunk {} {what}", w.key, hex::encode(w.hash)),
    ))
}

impl Storage {
    /// Takes bucket `bucket_id`'s index and holds every chunk it lists
    /// under `hold_id` (the restore point's id; an earlier hold of that id
    /// is replaced), in one transaction. Reads no content.
    pub async fn snapshot_bucket(
        &self,
        bucket_id: &str,
        hold_id: &str,
    ) -> Result<BucketIndex, StorageError> {
        Ok(self
            .store()
            .snapshot_bucket_index(bucket_id, hold_id, self.grace_secs())
            .await?)
    }

    /// Ends hold `hold_id` (the restore point is dropped): its chunks may
    /// be collected once nothing else refers to them. Idempotent; false if
    /// there was no such hold.
    pub async fn release_hold(&self, hold_id: &str) -> Result<bool, StorageError> {
        Ok(self
            .store()
            .release_bucket_hold(hold_id, self.grace_secs())
            .await?)
    }

    /// Reads every distinct chunk `index` lists (from its row if inline,
    /// else from the blob backend) and checks its hash and size. The error
    /// names the first object, in index order, with a missing or corrupt
    /// chunk: an `Io` error of kind `NotFound` or `InvalidData`.
    pub async fn verify_index(&self, index: &BucketIndex) -> Result<IndexReport, StorageError> {
        check_index(index)?;
        let mut seen = HashSet::new();
        let mut wanted = Vec::new();
        for o in &index.objects {
            for (chunk, size) in o.chunks.iter().zip(&o.chunk_sizes) {
                let hash = blob::hash_from_slice(chunk)
                    .ok_or_else(|| malformed("a chunk address is not 32 bytes".into()))?;
                if seen.insert(hash) {
                    wanted.push(Wanted {
                        hash,
                        size: *size as u64,
                        key: &o.key,
                    });
                }
            }
        }
        let mut report = IndexReport {
            objects: index.objects.len() as u64,
            ..IndexReport::default()
        };
        for batch in wanted.chunks(INLINE_BATCH) {
            let hashes: Vec<Vec<u8>> = batch.iter().map(|w| w.hash.to_vec()).collect();
            let rows = self.store().chunk_rows(&hashes).await?;
            let rows: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>> =
                rows.into_iter().collect();
            let blobs = self.inner.blobs.clone();
            // In index order, a few reads at a time: the first failure met
            // is the first in the index.
            // Collected first: a lazy `map` would keep its closure in the
            // future, which then is not Send for every lifetime (spawned
            // drills need that).
            let reads: Vec<_> = batch
                .iter()
                .map(|w| {
                    let row = rows.get(w.hash.as_slice());
                    let blobs = blobs.clone();
                    async move {
                        let read = match row {
                            // Collected: the index names a chunk that is gone.
                            None => Err(std::io::Error::new(
                                ErrorKind::NotFound,
                                "it has no row in the chunk index",
                            )),
                            Some(Some(data)) => {
                                blob::verify(&w.hash, data).map(|()| (data.len(), true))
                            }
                            Some(None) => blobs.read(w.hash).await.map(|b| (b.len(), false)),
                        };
                        let (len, inline) = read.map_err(|e| chunk_error(w, e))?;
                        if len as u64 != w.size {
                            return Err(chunk_error(
                                w,
                                std::io::Error::new(
                                    ErrorKind::InvalidData,
                                    format!("{len} bytes, the index says {}", w.size),
                                ),
                            ));
                        }
                        Ok::<_, StorageError>((len as u64, inline))
                    }
                })
                .collect();
            let mut checked = stream::iter(reads).buffered(VERIFY_READ_AHEAD);
            while let Some((len, inline)) = checked.try_next().await? {
                report.chunks += 1;
                report.bytes += len;
                report.inline_chunks += u64::from(inline);
            }
        }
        Ok(report)
    }

    /// Makes bucket `bucket_id` (the index's own or another, e.g. staging
    /// restored from production) hold exactly `index`'s objects, in one
    /// transaction; changes nothing and fails if a chunk the index lists
    /// was collected (kept chunks are those of a live hold). Multipart
    /// uploads in progress are left alone.
    pub async fn restore_bucket(
        &self,
        bucket_id: &str,
        index: &BucketIndex,
    ) -> Result<RestoreReport, StorageError> {
        check_index(index)?;
        let restored = self
            .store()
            .restore_bucket_index(bucket_id, index, self.grace_secs())
            .await;
        match restored {
            Ok(report) => Ok(report),
            Err(mds_store::StoreError::Storage(mds_store::StorageRule::BlobMissing)) => {
                Err(StorageError::Io(std::io::Error::new(
                    ErrorKind::NotFound,
                    "a chunk the index lists was collected; the restore changed nothing",
                )))
            }
            Err(e) => Err(e.into()),
        }
    }
}
