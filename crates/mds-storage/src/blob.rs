//! Where chunk bytes live, by content address (BLAKE3).
//!
//! Every chunk is written to a temporary file and fsynced before it gets a
//! name; on the filesystem the name is given by `rename` (then the
//! directory is fsynced), so a chunk file is either whole or absent.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

pub type Hash = [u8; 32];

/// A chunk written and fsynced to a temporary file, not yet named.
#[derive(Debug)]
pub struct StagedChunk {
    pub hash: Hash,
    pub size: u64,
    pub temp: PathBuf,
}

impl Drop for StagedChunk {
    fn drop(&mut self) {
        // Gone already once stored; otherwise the upload was abandoned.
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// The blob backend: the local filesystem (default).
#[derive(Debug, Clone)]
pub struct FsBlobs {
    root: PathBuf,
    temp: PathBuf,
}

impl FsBlobs {
    /// Opens (creating) `dir/blobs` and `dir/tmp`; leftovers of uploads cut
    /// short by a crash are removed from `tmp`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let root = dir.join("blobs");
        let temp = dir.join("tmp");
        std::fs::create_dir_all(&root)?;
        if temp.exists() {
            std::fs::remove_dir_all(&temp)?;
        }
        std::fs::create_dir_all(&temp)?;
        Ok(Self { root, temp })
    }

    pub fn temp_dir(&self) -> &Path {
        &self.temp
    }

    fn path(&self, hash: &Hash) -> PathBuf {
        let hex = hex::encode(hash);
        self.root.join(&hex[..2]).join(hex)
    }

    pub fn exists(&self, hash: &Hash) -> bool {
        self.path(hash).exists()
    }

    /// Names a staged chunk durably; a no-op if the content is there.
    pub fn store(&self, chunk: &StagedChunk) -> std::io::Result<()> {
        let path = self.path(&chunk.hash);
        if path.exists() {
            return Ok(());
        }
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir)?;
        std::fs::rename(&chunk.temp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// The chunk's bytes, verified against its address.
    pub fn read(&self, hash: &Hash) -> std::io::Result<Bytes> {
        let bytes = std::fs::read(self.path(hash))?;
        verify(hash, &bytes)?;
        Ok(Bytes::from(bytes))
    }

    pub fn delete(&self, hash: &Hash) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(hash)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Hashes `data`, writes it to a new file in `temp_dir` and fsyncs it.
pub fn stage(temp_dir: &Path, data: &[u8]) -> std::io::Result<StagedChunk> {
    let hash = *blake3::hash(data).as_bytes();
    let temp = temp_dir.join(format!(
        "{}.{}",
        hex::encode(&hash[..8]),
        rand::random::<u64>()
    ));
    let chunk = StagedChunk {
        hash,
        size: data.len() as u64,
        temp,
    };
    let mut file = std::fs::File::create(&chunk.temp)?;
    file.write_all(data)?;
    file.sync_all()?;
    Ok(chunk)
}

/// An error unless `data` has the content address `hash`.
pub fn verify(hash: &Hash, data: &[u8]) -> std::io::Result<()> {
    if blake3::hash(data).as_bytes() != hash {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "chunk {} is corrupt: its content does not match its address",
                hex::encode(hash)
            ),
        ));
    }
    Ok(())
}

pub fn hash_from_slice(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_chunks_read_back_and_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobs::open(dir.path()).unwrap();
        let chunk = stage(blobs.temp_dir(), b"hello").unwrap();
        let hash = chunk.hash;
        blobs.store(&chunk).unwrap();
        drop(chunk);
        assert_eq!(&blobs.read(&hash).unwrap()[..], b"hello");
        std::fs::write(blobs.path(&hash), b"hellO").unwrap();
        let err = blobs.read(&hash).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        blobs.delete(&hash).unwrap();
        assert!(!blobs.exists(&hash));
    }
}
