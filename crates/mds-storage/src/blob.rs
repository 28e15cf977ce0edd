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

    /// Names a staged chunk (`temp`, content `hash`) durably; a no-op if
    /// the content is there.
    pub fn store(&self, hash: &Hash, temp: &Path) -> std::io::Result<()> {
        let path = self.path(hash);
        if path.exists() {
            return Ok(());
        }
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir)?;
        std::fs::rename(temp, &path)?;
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

/// Chunks on any S3-compatible service (`--s3-url`), through the
/// object_store crate; uploads are still staged and hashed locally first.
#[derive(Debug, Clone)]
pub struct RemoteBlobs {
    store: std::sync::Arc<object_store::aws::AmazonS3>,
    prefix: String,
    temp: PathBuf,
    /// For logs: where the chunks live, without credentials.
    pub location: String,
}

fn remote_error(e: object_store::Error) -> std::io::Error {
    match e {
        object_store::Error::NotFound { .. } => {
            std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string())
        }
        other => std::io::Error::other(other.to_string()),
    }
}

/// An S3-compatible service named by a URL with its credentials:
/// `http(s)://KEY:SECRET@host[:port]/bucket[/prefix]`, path-style, or
/// `s3://...` for plain HTTP. `flag` names the option in errors.
pub struct S3Location {
    pub store: object_store::aws::AmazonS3,
    pub prefix: String,
    /// For logs: where it is, without credentials.
    pub location: String,
}

pub fn s3_location(url: &str, flag: &str) -> Result<S3Location, String> {
    let usage = format!("{flag} must be s3:// or http(s)://KEY:SECRET@host:port/bucket[/prefix]");
    let parsed = url::Url::parse(url).map_err(|e| format!("{flag} is not a URL: {e}"))?;
    let scheme = match parsed.scheme() {
        "http" | "s3" => "http",
        "https" => "https",
        _ => return Err(usage),
    };
    let decode =
        |s: &str| percent_decode(s).ok_or_else(|| format!("{flag} has bad percent-encoding"));
    let key = decode(parsed.username())?;
    let secret = decode(parsed.password().unwrap_or_default())?;
    if key.is_empty() || secret.is_empty() {
        return Err(format!("{flag} needs credentials: {usage}"));
    }
    let mut segments = parsed.path().trim_matches('/').splitn(2, '/');
    let bucket = segments
        .next()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("{flag} names no bucket"))?;
    let prefix = segments.next().unwrap_or("").trim_matches('/').to_string();
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("{flag} names no host"))?;
    let endpoint = match parsed.port() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    };
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_bucket_name(bucket)
        .with_access_key_id(key)
        .with_secret_access_key(secret)
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .map_err(|e| format!("{flag}: {e}"))?;
    Ok(S3Location {
        store,
        prefix,
        location: format!("{endpoint}/{bucket}"),
    })
}

impl RemoteBlobs {
    /// `--s3-url` (see [`s3_location`]); local temporary files go to
    /// `dir/tmp`.
    pub fn open(url: &str, dir: &Path) -> Result<Self, String> {
        let S3Location {
            store,
            prefix,
            location,
        } = s3_location(url, "--s3-url")?;
        let temp = dir.join("tmp");
        if temp.exists() {
            std::fs::remove_dir_all(&temp).map_err(|e| e.to_string())?;
        }
        std::fs::create_dir_all(&temp).map_err(|e| e.to_string())?;
        Ok(Self {
            store: std::sync::Arc::new(store),
            prefix,
            temp,
            location,
        })
    }

    fn path(&self, hash: &Hash) -> object_store::path::Path {
        let hex = hex::encode(hash);
        let name = format!("blobs/{}/{hex}", &hex[..2]);
        if self.prefix.is_empty() {
            object_store::path::Path::from(name)
        } else {
            object_store::path::Path::from(format!("{}/{name}", self.prefix))
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The blob backend in use.
#[derive(Debug, Clone)]
pub enum Blobs {
    Fs(FsBlobs),
    Remote(RemoteBlobs),
}

impl Blobs {
    pub fn temp_dir(&self) -> &Path {
        match self {
            Blobs::Fs(fs) => fs.temp_dir(),
            Blobs::Remote(remote) => &remote.temp,
        }
    }

    /// Names a staged chunk durably (no-op if its content is there).
    pub async fn store(&self, chunk: &StagedChunk) -> std::io::Result<()> {
        match self {
            Blobs::Fs(fs) => {
                let fs = fs.clone();
                let (hash, temp) = (chunk.hash, chunk.temp.clone());
                tokio::task::spawn_blocking(move || fs.store(&hash, &temp))
                    .await
                    .map_err(std::io::Error::other)?
            }
            Blobs::Remote(remote) => {
                let path = remote.path(&chunk.hash);
                if object_store::ObjectStore::head(&*remote.store, &path)
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
                let bytes = tokio::fs::read(&chunk.temp).await?;
                object_store::ObjectStore::put(&*remote.store, &path, Bytes::from(bytes).into())
                    .await
                    .map_err(remote_error)?;
                Ok(())
            }
        }
    }

    /// A chunk's bytes, verified against its address.
    pub async fn read(&self, hash: Hash) -> std::io::Result<Bytes> {
        match self {
            Blobs::Fs(fs) => {
                let fs = fs.clone();
                tokio::task::spawn_blocking(move || fs.read(&hash))
                    .await
                    .map_err(std::io::Error::other)?
            }
            Blobs::Remote(remote) => {
                let got = object_store::ObjectStore::get(&*remote.store, &remote.path(&hash))
                    .await
                    .map_err(remote_error)?;
                let bytes = got.bytes().await.map_err(remote_error)?;
                verify(&hash, &bytes)?;
                Ok(bytes)
            }
        }
    }

    pub async fn delete(&self, hash: Hash) -> std::io::Result<()> {
        match self {
            Blobs::Fs(fs) => {
                let fs = fs.clone();
                tokio::task::spawn_blocking(move || fs.delete(&hash))
                    .await
                    .map_err(std::io::Error::other)?
            }
            Blobs::Remote(remote) => {
                match object_store::ObjectStore::delete(&*remote.store, &remote.path(&hash)).await {
                    Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
                    Err(e) => Err(remote_error(e)),
                }
            }
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
        blobs.store(&hash, &chunk.temp).unwrap();
        drop(chunk);
        assert_eq!(&blobs.read(&hash).unwrap()[..], b"hello");
        std::fs::write(blobs.path(&hash), b"hellO").unwrap();
        let err = blobs.read(&hash).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        blobs.delete(&hash).unwrap();
        assert!(!blobs.exists(&hash));
    }
}
