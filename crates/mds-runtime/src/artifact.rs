//! The release store: immutable tar+zstd artifacts named by the SHA-256 of
//! their bytes (`DIR/ab/<sha256>.tar.zst`). An artifact is written to a
//! temporary file, fsynced, then renamed into place, so it is either whole
//! or absent; it is checked against its name before every unpack.
//!
//! The tar stream itself is made and unpacked by `tar` inside the jail of
//! the workspace concerned (see `mds-server`'s deploy module): mds never
//! walks or writes a tenant's tree with its own privileges.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// zstd's default level: fast, and most of the size win.
const LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("the release is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the artifact {0} is gone from the release store")]
    Gone(String),
    #[error("the artifact {0} does not match its SHA-256; it was damaged on disk")]
    Corrupt(String),
    #[error("release store I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A stored artifact.
#[derive(Debug, Clone)]
pub struct Stored {
    pub sha256: String,
    /// Size of the artifact (compressed).
    pub bytes: u64,
    /// Size of the tar stream it holds.
    pub tar_bytes: u64,
    /// Regular files in it.
    pub files: u64,
    /// Their total size.
    pub file_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Artifacts {
    dir: PathBuf,
    temp: PathBuf,
}

/// Counts what it passes on (and fails past a limit).
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what it passes on.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Artifacts {
    /// Opens (creating) the store at `dir`; temporary files of writes cut
    /// short by a crash are removed.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let temp = dir.join("tmp");
        std::fs::create_dir_all(dir)?;
        if temp.exists() {
            std::fs::remove_dir_all(&temp)?;
        }
        std::fs::create_dir_all(&temp)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            temp,
        })
    }

    fn path(&self, sha256: &str) -> Option<PathBuf> {
        let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| {
            self.dir
                .join(&sha256[..2])
                .join(format!("{sha256}.tar.zst"))
        })
    }

    pub fn exists(&self, sha256: &str) -> bool {
        self.path(sha256).is_some_and(|p| p.is_file())
    }

    /// Compresses the tar stream `source` into a new artifact, at most
    /// `max_tar_bytes` of it, and names it by its SHA-256.
    pub async fn store(
        &self,
        mut source: impl AsyncRead + Unpin,
        max_tar_bytes: u64,
    ) -> Result<Stored, ArtifactError> {
        let temp = tempfile::NamedTempFile::new_in(&self.temp)?;
        let file = temp.as_file().try_clone()?;
        let mut encoder = zstd::Encoder::new(
            Counting {
                inner: Hashing {
                    inner: std::io::BufWriter::new(file),
                    hash: Sha256::new(),
                },
                written: 0,
            },
            LEVEL,
        )?;
        let mut tar_bytes = 0u64;
        let mut buffer = vec![0u8; 256 << 10];
        loop {
            let n = source.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            tar_bytes += n as u64;
            if tar_bytes > max_tar_bytes {
                return Err(ArtifactError::TooLarge(max_tar_bytes));
            }
            // A quarter MiB compresses in well under a millisecond.
            encoder.write_all(&buffer[..n])?;
        }
        let counting = encoder.finish()?;
        let bytes = counting.written;
        let Hashing { inner, hash } = counting.inner;
        inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let sha256 = hex::encode(hash.finalize());
        let path = self.path(&sha256).expect("a digest is valid hex");
        let (files, file_bytes) = {
            let temp_path = temp.path().to_path_buf();
            tokio::task::spawn_blocking(move || count_files(&temp_path))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??
        };
        let dir = path.parent().expect("artifact paths have a parent");
        std::fs::create_dir_all(dir)?;
        if !path.exists() {
            temp.persist(&path).map_err(|e| e.error)?;
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(Stored {
            sha256,
            bytes,
            tar_bytes,
            files,
            file_bytes,
        })
    }

    /// Checks the artifact against its name, then writes its tar stream
    /// to `sink` (the stdin of a jailed `tar -x`). Both passes stream:
    /// memory stays small whatever the artifact's size.
    pub async fn unpack_into(
        &self,
        sha256: &str,
        mut sink: impl AsyncWrite + Unpin,
    ) -> Result<(), ArtifactError> {
        let gone = || ArtifactError::Gone(sha256.to_string());
        let path = self.path(sha256).ok_or_else(gone)?;
        let hashed = path.clone();
        let digest = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut file = std::fs::File::open(hashed)?;
            let mut hash = Sha256::new();
            std::io::copy(&mut file, &mut hash)?;
            Ok(hex::encode(hash.finalize()))
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        match digest {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(gone()),
            Err(e) => return Err(e.into()),
            Ok(digest) if digest != sha256 => {
                return Err(ArtifactError::Corrupt(sha256.to_string()))
            }
            Ok(_) => {}
        }
        let (chunks, mut received) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let decoding = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut decoder = zstd::Decoder::new(std::fs::File::open(path)?)?;
            loop {
                let mut buffer = vec![0u8; 256 << 10];
                let n = decoder.read(&mut buffer)?;
                if n == 0 {
                    return Ok(());
                }
                buffer.truncate(n);
                if chunks.blocking_send(buffer).is_err() {
                    // The reader went away (its tar failed).
                    return Ok(());
                }
            }
        });
        while let Some(chunk) = received.recv().await {
            sink.write_all(&chunk).await?;
        }
        decoding
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        sink.shutdown().await?;
        Ok(())
    }

    /// Removes artifacts no kept version names: those named only by
    /// versions past retention (`named` but not `keep`) at once, and
    /// unnamed ones (a publish cut short) once older than `grace` (a
    /// publish in progress names its artifact only when it is stored).
    /// Returns how many were removed.
    pub fn collect(
        &self,
        keep: &HashSet<String>,
        named: &HashSet<String>,
        grace: std::time::Duration,
    ) -> std::io::Result<usize> {
        let mut removed = 0;
        for shard in std::fs::read_dir(&self.dir)?.flatten() {
            if shard.file_name() == "tmp" || !shard.path().is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let sha = name.trim_end_matches(".tar.zst");
                if keep.contains(sha) {
                    continue;
                }
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default() > grace)
                    .unwrap_or(true);
                if named.contains(sha) || old {
                    std::fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Regular files in an artifact and their total size, from its headers
/// (nothing is written anywhere).
fn count_files(path: &Path) -> std::io::Result<(u64, u64)> {
    let decoder = zstd::Decoder::new(std::fs::File::open(path)?)?;
    let mut archive = tar::Archive::new(decoder);
    let (mut files, mut bytes) = (0, 0);
    for entry in archive.entries()? {
        let entry = entry?;
        if entry.header().entry_type().is_file() {
            files += 1;
            bytes += entry.size();
        }
    }
    Ok((files, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[tokio::test]
    async fn stores_by_sha256_counts_files_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Artifacts::open(dir.path()).unwrap();
        let tar = tar_of(&[("index.html", b"<h1>hi</h1>"), ("app.js", b"x")]);
        let stored = store.store(&tar[..], 1 << 20).await.unwrap();
        assert_eq!((stored.files, stored.file_bytes), (2, 12));
        let path = store.path(&stored.sha256).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&on_disk)), stored.sha256);
        assert_eq!(on_disk.len() as u64, stored.bytes);

        let mut out = Vec::new();
        store.unpack_into(&stored.sha256, &mut out).await.unwrap();
        assert_eq!(out, tar);

        // Damage is found before a byte is unpacked.
        let mut damaged = on_disk.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        std::fs::write(&path, damaged).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            store.unpack_into(&stored.sha256, &mut out).await,
            Err(ArtifactError::Corrupt(_))
        ));
        assert!(out.is_empty());

        // Unnamed and fresh: kept (a publish may be naming it now).
        let none = HashSet::new();
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(store.collect(&none, &none, hour).unwrap(), 0);
        let named: HashSet<String> = [stored.sha256.clone()].into();
        assert_eq!(store.collect(&named, &named, hour).unwrap(), 0);
        assert_eq!(store.collect(&none, &named, hour).unwrap(), 1);
        assert!(matches!(
            store.unpack_into(&stored.sha256, &mut out).await,
            Err(ArtifactError::Gone(_))
        ));
        assert!(matches!(
            store.unpack_into("../../etc/passwd", &mut out).await,
            Err(ArtifactError::Gone(_))
        ));
        assert!(matches!(
            store.store(&tar[..], 100).await,
            Err(ArtifactError::TooLarge(100))
        ));
    }
}
