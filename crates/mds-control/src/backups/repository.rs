//! The backup repository (`--backup-url`): a directory (by default
//! `DIR/backups`) or an S3-compatible service, holding every backup file
//! encrypted ([`mds_crypto::stream`], under a key derived from the master
//! key) with its size and BLAKE3 (of the stored bytes) kept in the
//! restore point's manifest.
//!
//! A file appears only whole: a directory write goes to a temporary name,
//! is fsynced and renamed; an S3 write is a multipart upload completed at
//! the end. A failed write (a full disk, say) leaves nothing behind.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mds_crypto::stream::{Opener, Sealer};
use mds_crypto::MasterKey;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, WriteMultipart};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("backup repository {location}: {detail}")]
    Io { location: String, detail: String },
    /// What was read is not what was written.
    #[error("backup file {path} is damaged: {detail}")]
    Damaged { path: String, detail: String },
    #[error("backup file {0} is missing from the repository")]
    Missing(String),
}

/// One file of the repository as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    /// Stored (encrypted) bytes.
    pub size: u64,
    /// BLAKE3 of the stored bytes, hex.
    pub blake3: String,
}

impl FileEntry {
    pub fn to_json(&self) -> Value {
        json!({ "path": self.path, "size": self.size, "blake3": self.blake3 })
    }

    /// The entries of a manifest's `files` (entries it cannot read are
    /// skipped: a drill then reports the file missing).
    pub fn list(files: &Value) -> Vec<FileEntry> {
        files
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                Some(FileEntry {
                    path: f.get("path")?.as_str()?.to_string(),
                    size: f.get("size")?.as_u64()?,
                    blake3: f.get("blake3")?.as_str()?.to_string(),
                })
            })
            .collect()
    }
}

#[derive(Clone)]
pub struct Repository(Arc<Inner>);

struct Inner {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// The directory of a local repository.
    local: Option<PathBuf>,
    location: String,
    key: Zeroizing<[u8; 32]>,
}

impl Repository {
    /// `url`: a directory path, or `s3://KEY:SECRET@host:port/bucket/prefix`
    /// (also `http(s)://`); none means `DIR/backups`.
    pub fn new(url: Option<&str>, data_dir: &Path, master_key: &MasterKey) -> Result<Self, String> {
        let key = master_key.derive("mds backup repository v1");
        let is_remote = url.is_some_and(|u| {
            u.starts_with("s3://") || u.starts_with("http://") || u.starts_with("https://")
        });
        let inner = if is_remote {
            let url = url.unwrap_or_default();
            let s3 = mds_storage::blob::s3_location(url, "--backup-url")?;
            Inner {
                store: Arc::new(s3.store),
                prefix: s3.prefix,
                local: None,
                location: s3.location,
                key,
            }
        } else {
            let dir = match url {
                Some(path) => PathBuf::from(path.strip_prefix("file://").unwrap_or(path)),
                None => data_dir.join("backups"),
            };
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("--backup-url: creating {}: {e}", dir.display()))?;
            let dir = dir
                .canonicalize()
                .map_err(|e| format!("--backup-url: {}: {e}", dir.display()))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| format!("--backup-url: {e}"))?;
            Inner {
                store: Arc::new(store),
                prefix: String::new(),
                location: dir.display().to_string(),
                local: Some(dir),
                key,
            }
        };
        Ok(Self(Arc::new(inner)))
    }

    /// Where it is, without credentials.
    pub fn location(&self) -> &str {
        &self.0.location
    }

    /// Whether the repository is a directory on the filesystem that holds
    /// `data_dir`: a copy there survives mistakes, not the disk.
    pub fn on_disk_of(&self, data_dir: &Path) -> bool {
        let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        match &self.0.local {
            Some(dir) => device(dir).is_some() && device(dir) == device(data_dir),
            None => false,
        }
    }

    fn store_path(&self, path: &str) -> StorePath {
        if self.0.prefix.is_empty() {
            StorePath::from(path)
        } else {
            StorePath::from(format!("{}/{path}", self.0.prefix))
        }
    }

    fn io(&self, detail: impl std::fmt::Display) -> RepoError {
        RepoError::Io {
            location: self.0.location.clone(),
            detail: detail.to_string(),
        }
    }

    fn store_error(&self, path: &str, e: object_store::Error) -> RepoError {
        match e {
            object_store::Error::NotFound { .. } => RepoError::Missing(path.to_string()),
            other => self.io(other),
        }
    }

    /// A new file at `path`; write it, then [`RepoWriter::finish`].
    pub async fn create(&self, path: &str) -> Result<RepoWriter, RepoError> {
        let (sealer, header) = Sealer::new(&self.0.key, path);
        let sink = match &self.0.local {
            Some(dir) => {
                let target = dir.join(path);
                let parent = target.parent().unwrap_or(dir).to_path_buf();
                tokio::fs::create_dir_all(&parent)
                    .await
                    .map_err(|e| self.io(format!("creating {}: {e}", parent.display())))?;
                let temp = parent.join(format!(
                    ".{}.partial-{}",
                    target
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default(),
                    ulid::Ulid::new()
                ));
                let file = tokio::fs::File::create(&temp)
                    .await
                    .map_err(|e| self.io(format!("creating {}: {e}", temp.display())))?;
                Sink::Local { file, temp, target }
            }
            None => {
                let upload = self
                    .0
                    .store
                    .put_multipart(&self.store_path(path))
                    .await
                    .map_err(|e| self.io(e))?;
                Sink::Remote(Box::new(WriteMultipart::new_with_chunk_size(
                    upload,
                    8 << 20,
                )))
            }
        };
        let mut writer = RepoWriter {
            repo: self.clone(),
            path: path.to_string(),
            sealer: Some(sealer),
            sink: Some(sink),
            out: Vec::new(),
            out_at: 0,
            hasher: blake3::Hasher::new(),
            size: 0,
        };
        writer.queue(header);
        Ok(writer)
    }

    /// Writes a small file whole.
    pub async fn put(&self, path: &str, data: &[u8]) -> Result<FileEntry, RepoError> {
        let mut writer = self.create(path).await?;
        if let Err(e) = writer.write_all(data).await {
            writer.abort().await;
            return Err(self.io(e));
        }
        writer.finish().await
    }

    /// The file's plaintext as a stream of reads; an error before the end
    /// if any byte differs from what was written.
    pub async fn open(&self, entry: &FileEntry) -> Result<RepoReader, RepoError> {
        let result = self
            .0
            .store
            .get(&self.store_path(&entry.path))
            .await
            .map_err(|e| self.store_error(&entry.path, e))?;
        Ok(RepoReader {
            inner: result.into_stream().boxed(),
            opener: Opener::new(&self.0.key, &entry.path),
            hasher: blake3::Hasher::new(),
            size: 0,
            entry: entry.clone(),
            ready: Bytes::new(),
            finished: false,
        })
    }

    /// A small file's whole plaintext.
    pub async fn get(&self, entry: &FileEntry) -> Result<Vec<u8>, RepoError> {
        use tokio::io::AsyncReadExt;
        let mut reader = self.open(entry).await?;
        let mut out = Vec::new();
        reader
            .read_to_end(&mut out)
            .await
            .map_err(|e| read_error(entry, e))?;
        Ok(out)
    }

    /// Reads a file's stored bytes and checks their size and BLAKE3
    /// (without decrypting): the check a restore makes before it starts.
    pub async fn check(&self, entry: &FileEntry) -> Result<(), RepoError> {
        let result = self
            .0
            .store
            .get(&self.store_path(&entry.path))
            .await
            .map_err(|e| self.store_error(&entry.path, e))?;
        let mut stream = result.into_stream();
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.io(e))?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        verify_digest(entry, size, &hasher)
    }

    /// Deletes a file; one that is already gone is fine.
    pub async fn delete(&self, path: &str) -> Result<(), RepoError> {
        match self.0.store.delete(&self.store_path(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Deletes everything under `prefix` (temporary names of a write that
    /// died with the server too, for a directory repository).
    pub async fn delete_under(&self, prefix: &str) -> Result<(), RepoError> {
        if let Some(dir) = &self.0.local {
            let path = dir.join(prefix);
            return match tokio::fs::remove_dir_all(&path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io(e)),
                _ => Ok(()),
            };
        }
        let listed: Vec<_> = self
            .0
            .store
            .list(Some(&self.store_path(prefix)))
            .collect()
            .await;
        for meta in listed {
            let meta = meta.map_err(|e| self.io(e))?;
            match self.0.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(())
    }
}

fn verify_digest(entry: &FileEntry, size: u64, hasher: &blake3::Hasher) -> Result<(), RepoError> {
    if size != entry.size {
        return Err(RepoError::Damaged {
            path: entry.path.clone(),
            detail: format!("{size} bytes stored, {} written", entry.size),
        });
    }
    let digest = hasher.finalize().to_hex().to_string();
    if digest != entry.blake3 {
        return Err(RepoError::Damaged {
            path: entry.path.clone(),
            detail: format!("BLAKE3 {digest}, {} written", entry.blake3),
        });
    }
    Ok(())
}

/// A read error of a [`RepoReader`] as the repository error it carries.
pub fn read_error(entry: &FileEntry, e: std::io::Error) -> RepoError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<RepoErrorBox>())
    {
        Some(RepoErrorBox(message)) => RepoError::Damaged {
            path: entry.path.clone(),
            detail: message.clone(),
        },
        None => RepoError::Io {
            location: entry.path.clone(),
            detail: e.to_string(),
        },
    }
}

#[derive(Debug)]
struct RepoErrorBox(String);

impl std::fmt::Display for RepoErrorBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RepoErrorBox {}

fn damaged(detail: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, RepoErrorBox(detail.into()))
}

enum Sink {
    Local {
        file: tokio::fs::File,
        temp: PathBuf,
        target: PathBuf,
    },
    Remote(Box<WriteMultipart>),
}

/// A file being written: plaintext in, sealed frames out.
pub struct RepoWriter {
    repo: Repository,
    path: String,
    sealer: Option<Sealer>,
    sink: Option<Sink>,
    /// Sealed bytes not yet handed to the sink.
    out: Vec<u8>,
    out_at: usize,
    hasher: blake3::Hasher,
    size: u64,
}

impl RepoWriter {
    fn queue(&mut self, sealed: Vec<u8>) {
        self.hasher.update(&sealed);
        self.size += sealed.len() as u64;
        if self.out_at == self.out.len() {
            self.out = sealed;
            self.out_at = 0;
        } else {
            self.out.extend(sealed);
        }
    }

    /// Hands the queued sealed bytes to the sink.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.out_at < self.out.len() {
            match self.sink.as_mut() {
                Some(Sink::Local { file, .. }) => {
                    let n = ready!(Pin::new(file).poll_write(cx, &self.out[self.out_at..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                    }
                    self.out_at += n;
                }
                Some(Sink::Remote(upload)) => {
                    ready!(upload.poll_for_capacity(cx, 4)).map_err(std::io::Error::other)?;
                    upload.write(&self.out[self.out_at..]);
                    self.out_at = self.out.len();
                }
                None => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            }
        }
        self.out.clear();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Seals the last frame, makes the file durable and visible, and
    /// returns its manifest entry. On error nothing is left behind.
    pub async fn finish(mut self) -> Result<FileEntry, RepoError> {
        match self.finish_inner().await {
            Ok(entry) => Ok(entry),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    async fn finish_inner(&mut self) -> Result<FileEntry, RepoError> {
        let repo = self.repo.clone();
        let last = match self.sealer.take() {
            Some(sealer) => sealer.finish().map_err(|e| repo.io(e))?,
            None => return Err(repo.io("the file was already finished")),
        };
        self.queue(last);
        std::future::poll_fn(|cx| self.poll_drain(cx))
            .await
            .map_err(|e| repo.io(e))?;
        match self.sink.take() {
            Some(Sink::Local {
                mut file,
                temp,
                target,
            }) => {
                let durable = async {
                    file.flush().await?;
                    file.sync_all().await?;
                    drop(file);
                    tokio::fs::rename(&temp, &target).await?;
                    if let Some(parent) = target.parent() {
                        tokio::fs::File::open(parent).await?.sync_all().await?;
                    }
                    Ok::<_, std::io::Error>(())
                }
                .await;
                if let Err(e) = durable {
                    let _ = tokio::fs::remove_file(&temp).await;
                    return Err(repo.io(format!("writing {}: {e}", target.display())));
                }
            }
            Some(Sink::Remote(upload)) => {
                upload.finish().await.map_err(|e| repo.io(e))?;
            }
            None => return Err(repo.io("the file was already finished")),
        }
        Ok(FileEntry {
            path: self.path.clone(),
            size: self.size,
            blake3: self.hasher.finalize().to_hex().to_string(),
        })
    }

    /// Drops what was written.
    pub async fn abort(mut self) {
        match self.sink.take() {
            Some(Sink::Local { file, temp, .. }) => {
                drop(file);
                let _ = tokio::fs::remove_file(&temp).await;
            }
            Some(Sink::Remote(upload)) => {
                let _ = upload.abort().await;
            }
            None => {}
        }
    }
}

impl AsyncWrite for RepoWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_drain(cx))?;
        let sealed = match self.sealer.as_mut() {
            Some(sealer) => sealer.push(buf).map_err(std::io::Error::other)?,
            None => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        };
        if !sealed.is_empty() {
            self.queue(sealed);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_drain(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // The file is completed by `finish`, not here.
        self.poll_drain(cx)
    }
}

/// A file being read: sealed bytes in, checked plaintext out.
pub struct RepoReader {
    inner: Pin<Box<dyn Stream<Item = object_store::Result<Bytes>> + Send>>,
    opener: Opener,
    hasher: blake3::Hasher,
    size: u64,
    entry: FileEntry,
    ready: Bytes,
    finished: bool,
}

impl AsyncRead for RepoReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.ready.is_empty() {
                let n = self.ready.len().min(buf.remaining());
                let part = self.ready.split_to(n);
                buf.put_slice(&part);
                return Poll::Ready(Ok(()));
            }
            if self.finished {
                return Poll::Ready(Ok(()));
            }
            let this = &mut *self;
            match ready!(this.inner.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => {
                    this.size += chunk.len() as u64;
                    this.hasher.update(&chunk);
                    let plain = this
                        .opener
                        .push(&chunk)
                        .map_err(|_| damaged("a frame does not authenticate"))?;
                    this.ready = Bytes::from(plain);
                }
                Some(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
                None => {
                    // The whole file is checked before its last frame is
                    // given out.
                    verify_digest(&this.entry, this.size, &this.hasher)
                        .map_err(|e| damaged(e.to_string()))?;
                    let plain = this
                        .opener
                        .finish()
                        .map_err(|_| damaged("the last frame does not authenticate"))?;
                    this.ready = Bytes::from(plain);
                    this.finished = true;
                }
            }
        }
    }
}
