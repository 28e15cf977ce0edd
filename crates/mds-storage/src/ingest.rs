//! Turns an incoming body into fsynced chunks plus its MD5, without holding
//! more than a few chunks in memory.
//!
//! MD5 (the S3 ETag) runs at ~0.7 GB/s per core, slower than BLAKE3 and the
//! disk, so it has its own blocking task: chunk N's MD5 runs beside chunk
//! N's hashing and writing, while chunk N+1 is being received.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use tokio::task::JoinHandle;

use crate::blob::{self, StagedChunk};
use crate::StorageError;

/// Chunk size: big enough that per-chunk costs vanish on large objects,
/// small enough that verifying a whole chunk for a range read is cheap.
pub const CHUNK_SIZE: usize = 8 << 20;

/// Chunks being written at once per upload.
const WRITES_IN_FLIGHT: usize = 2;

pub struct Ingested {
    pub chunks: Vec<StagedChunk>,
    pub md5: [u8; 16],
    pub size: u64,
    /// A body of at most `inline_max` bytes, kept in memory instead of a
    /// chunk file (then `chunks` is empty).
    pub inline: Option<Bytes>,
}

fn join_error(e: tokio::task::JoinError) -> StorageError {
    StorageError::Io(std::io::Error::other(e))
}

/// Reads `body` to its end (failing past `limit` bytes) into staged chunks,
/// or, when it is `inline_max` bytes or less, into memory.
pub async fn ingest<S>(
    mut body: S,
    temp_dir: &Path,
    limit: u64,
    inline_max: usize,
) -> Result<Ingested, StorageError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    let mut buffer = BytesMut::new();
    let mut size = 0u64;
    let mut md5: Option<JoinHandle<Md5>> = None;
    let mut writes: VecDeque<JoinHandle<std::io::Result<StagedChunk>>> = VecDeque::new();
    let mut chunks = Vec::new();
    let temp_dir: PathBuf = temp_dir.to_path_buf();
    while let Some(piece) = body.next().await {
        let mut piece = piece.map_err(StorageError::Body)?;
        size += piece.len() as u64;
        if size > limit {
            return Err(StorageError::TooLarge { limit });
        }
        while !piece.is_empty() {
            if buffer.capacity() == 0 {
                buffer.reserve(CHUNK_SIZE);
            }
            let take = piece.len().min(CHUNK_SIZE - buffer.len());
            buffer.extend_from_slice(&piece.split_to(take));
            if buffer.len() < CHUNK_SIZE {
                continue;
            }
            let chunk = std::mem::take(&mut buffer).freeze();
            let state = match md5.take() {
                Some(task) => task.await.map_err(join_error)?,
                None => Md5::new(),
            };
            let for_md5 = chunk.clone();
            md5 = Some(tokio::task::spawn_blocking(move || {
                let mut state = state;
                state.update(&for_md5);
                state
            }));
            if writes.len() >= WRITES_IN_FLIGHT {
                let oldest = writes.pop_front().expect("in flight");
                chunks.push(oldest.await.map_err(join_error)??);
            }
            let dir = temp_dir.clone();
            writes.push_back(tokio::task::spawn_blocking(move || {
                blob::stage(&dir, &chunk)
            }));
        }
    }
    if md5.is_none() && inline_max > 0 && buffer.len() <= inline_max {
        // Small: hashing it here costs less than a hop to a blocking task.
        let inline = buffer.freeze();
        return Ok(Ingested {
            chunks,
            md5: Md5::digest(&inline).into(),
            size,
            inline: Some(inline),
        });
    }
    for write in writes {
        chunks.push(write.await.map_err(join_error)??);
    }
    let state = match md5 {
        Some(task) => task.await.map_err(join_error)?,
        None => Md5::new(),
    };
    // The tail (all of a small object): its MD5 and write in one task.
    let tail: Bytes = buffer.freeze();
    let (digest, last) = tokio::task::spawn_blocking(move || {
        let mut state = state;
        state.update(&tail);
        let last = if tail.is_empty() && size > 0 {
            None
        } else {
            Some(blob::stage(&temp_dir, &tail))
        };
        (state.finalize(), last)
    })
    .await
    .map_err(join_error)?;
    if let Some(last) = last {
        chunks.push(last?);
    }
    Ok(Ingested {
        chunks,
        md5: digest.into(),
        size,
        inline: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(pieces: Vec<Vec<u8>>) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin {
        futures_util::stream::iter(pieces.into_iter().map(|p| Ok(Bytes::from(p))))
    }

    #[tokio::test]
    async fn chunks_concatenate_to_the_body_and_md5_covers_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(CHUNK_SIZE * 2 + 1000))
            .map(|i| (i % 251) as u8)
            .collect();
        let pieces = data.chunks(100_003).map(|c| c.to_vec()).collect();
        let got = ingest(body(pieces), dir.path(), u64::MAX, 1024)
            .await
            .unwrap();
        assert_eq!(got.size, data.len() as u64);
        assert_eq!(got.chunks.len(), 3);
        let mut joined = Vec::new();
        for chunk in &got.chunks {
            joined.extend(std::fs::read(&chunk.temp).unwrap());
        }
        assert_eq!(joined, data);
        assert_eq!(got.md5, <[u8; 16]>::from(Md5::digest(&data)));
    }

    #[tokio::test]
    async fn empty_bodies_have_one_empty_chunk_and_limits_hold() {
        let dir = tempfile::tempdir().unwrap();
        let got = ingest(body(vec![]), dir.path(), 10, 0).await.unwrap();
        assert_eq!((got.size, got.chunks.len()), (0, 1));
        let small = ingest(body(vec![vec![1; 5]]), dir.path(), 10, 8)
            .await
            .unwrap();
        assert_eq!(small.inline.as_deref(), Some(&[1u8; 5][..]));
        assert!(small.chunks.is_empty());
        assert_eq!(small.md5, <[u8; 16]>::from(Md5::digest([1u8; 5])));
        let err = ingest(body(vec![vec![0; 11]]), dir.path(), 10, 0).await;
        assert!(matches!(err, Err(StorageError::TooLarge { limit: 10 })));
    }
}
