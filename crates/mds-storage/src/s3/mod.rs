//! The S3 gateway: the S3 protocol (via s3s) over [`Storage`].
//!
//! s3s parses requests and checks SigV4 signatures (headers and presigned
//! URLs) against the secret a [`KeySource`] returns. Everything else is
//! ours: which buckets a key opens ([`Access`]), Content-MD5 and checksum
//! checks before a commit, listing, multipart and conditional requests.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mds_store::{ObjectRow, UploadRow};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::*;
use s3s::path::S3Path;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use serde_json::{json, Map, Value};

use crate::{BucketRow, KeyProblem, Storage, StorageError};

/// What an access key may open.
#[derive(Debug, Clone)]
pub struct Grant {
    pub secret: String,
    /// The one bucket (id) a binding's key opens; `None` for the server's
    /// admin key, which opens every bucket and may create them.
    pub bucket_id: Option<String>,
}

/// Resolves access keys to grants (binding keys live in the server).
#[async_trait::async_trait]
pub trait KeySource: Send + Sync + 'static {
    async fn grant(&self, access_key: &str) -> Result<Option<Grant>, StorageError>;
}

/// Lookups of keys and bucket names are cached this long: a revoked key or
/// deleted bucket stops working on other replicas within it.
const CACHE_TTL: Duration = Duration::from_secs(2);

struct Cached<T> {
    map: std::sync::RwLock<std::collections::HashMap<String, (Option<T>, Instant)>>,
}

impl<T: Clone> Cached<T> {
    fn new() -> Self {
        Self {
            map: Default::default(),
        }
    }

    fn get(&self, key: &str) -> Option<Option<T>> {
        let map = self.map.read().expect("cache lock");
        let (value, at) = map.get(key)?;
        (at.elapsed() < CACHE_TTL).then(|| value.clone())
    }

    fn put(&self, key: &str, value: Option<T>) {
        let mut map = self.map.write().expect("cache lock");
        if map.len() > 10_000 {
            map.clear();
        }
        map.insert(key.to_string(), (value, Instant::now()));
    }

    fn forget(&self, key: &str) {
        self.map.write().expect("cache lock").remove(key);
    }
}

struct Shared {
    storage: Storage,
    keys: Arc<dyn KeySource>,
    grants: Cached<Grant>,
    buckets: Cached<BucketRow>,
}

impl Shared {
    async fn grant(&self, access_key: &str) -> S3Result<Option<Grant>> {
        if let Some(hit) = self.grants.get(access_key) {
            return Ok(hit);
        }
        let grant = self.keys.grant(access_key).await.map_err(s3_err)?;
        self.grants.put(access_key, grant.clone());
        Ok(grant)
    }

    async fn bucket(&self, name: &str) -> S3Result<Option<BucketRow>> {
        if let Some(hit) = self.buckets.get(name) {
            return Ok(hit);
        }
        let row = self
            .storage
            .store()
            .bucket_by_name(name)
            .await
            .map_err(|e| s3_err(e.into()))?;
        self.buckets.put(name, row.clone());
        Ok(row)
    }
}

/// The S3 service: build with [`gateway`], serve with [`serve`].
pub struct Gateway(Arc<Shared>);
struct Auth(Arc<Shared>);
struct Access(Arc<Shared>);

pub fn gateway(storage: Storage, keys: Arc<dyn KeySource>) -> s3s::service::S3Service {
    let shared = Arc::new(Shared {
        storage,
        keys,
        grants: Cached::new(),
        buckets: Cached::new(),
    });
    let mut builder = s3s::service::S3ServiceBuilder::new(Gateway(shared.clone()));
    builder.set_auth(Auth(shared.clone()));
    builder.set_access(Access(shared));
    let mut config = s3s::config::S3Config::default();
    // Browser form uploads (POST Object) would be buffered whole in memory
    // by s3s; they are not offered.
    config.post_object_max_file_size = 0;
    config.xml_max_body_size = 4 << 20;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        config,
    ))));
    builder.build()
}

/// Serves `service` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: s3s::service::S3Service,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    tracing::warn!(error = %e, "S3 listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        let _ = socket.set_nodelay(true);
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone());
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.grant(access_key).await? {
            Some(grant) => Ok(SecretKey::from(grant.secret)),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let op = cx.s3_op().name();
        let bucket_name = match cx.s3_path() {
            S3Path::Root => None,
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(bucket.to_string()),
        };
        let Some(credentials) = cx.credentials() else {
            // Anonymous: only reads of a public bucket.
            if let (Some(name), "GetObject" | "HeadObject") = (&bucket_name, op) {
                if self.0.bucket(name).await?.is_some_and(|b| b.is_public()) {
                    return Ok(());
                }
            }
            return Err(s3_error!(AccessDenied, "Access Denied: sign the request"));
        };
        let grant = self
            .0
            .grant(&credentials.access_key)
            .await?
            .ok_or_else(|| s3_error!(InvalidAccessKeyId))?;
        let Some(allowed) = grant.bucket_id else {
            return Ok(());
        };
        match (bucket_name, op) {
            (None, _) => Ok(()),
            (Some(_), "CreateBucket" | "DeleteBucket") => Err(s3_error!(
                AccessDenied,
                "this key belongs to one storage binding and cannot create or delete buckets"
            )),
            (Some(name), _) => match self.0.bucket(&name).await? {
                Some(bucket) if bucket.id == allowed => Ok(()),
                _ => Err(s3_error!(AccessDenied, "Access Denied")),
            },
        }
    }
}

/// The S3 error for a storage failure.
fn s3_err(e: StorageError) -> S3Error {
    let message = e.to_string();
    let code = match e {
        StorageError::NoSuchBucket => S3ErrorCode::NoSuchBucket,
        StorageError::NoSuchKey => S3ErrorCode::NoSuchKey,
        StorageError::NoSuchUpload => S3ErrorCode::NoSuchUpload,
        StorageError::BucketNotEmpty => S3ErrorCode::BucketNotEmpty,
        StorageError::BucketExists => S3ErrorCode::BucketAlreadyOwnedByYou,
        StorageError::InvalidBucketName(_) => S3ErrorCode::InvalidBucketName,
        StorageError::InvalidKey(KeyProblem::TooLong) => S3ErrorCode::KeyTooLongError,
        StorageError::InvalidKey(_) => S3ErrorCode::InvalidArgument,
        StorageError::TooLarge { .. } => S3ErrorCode::EntityTooLarge,
        StorageError::BadDigest => S3ErrorCode::BadDigest,
        StorageError::InvalidPart(_) => S3ErrorCode::InvalidPart,
        StorageError::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
        StorageError::EntityTooSmall(_) => S3ErrorCode::EntityTooSmall,
        StorageError::InvalidRange => S3ErrorCode::InvalidRange,
        StorageError::Body(ref io) => return body_error(&io.to_string()),
        StorageError::Io(ref io) => {
            tracing::error!(error = %io, "S3 request failed on storage I/O");
            S3ErrorCode::InternalError
        }
        StorageError::Store(mds_store::StoreError::Unavailable(_)) => {
            S3ErrorCode::ServiceUnavailable
        }
        StorageError::Store(ref other) => {
            tracing::error!(error = %other, "S3 request failed on the metadata database");
            S3ErrorCode::InternalError
        }
    };
    S3Error::with_message(code, message)
}

/// A body that failed to read: a bad aws-chunked signature, a payload that
/// does not match its signed SHA-256, or a client that went away. s3s's
/// error types are private, so their text decides.
fn body_error(text: &str) -> S3Error {
    if text.contains("SignatureMismatch") {
        s3_error!(SignatureDoesNotMatch)
    } else if text.contains("Sha256Mismatch") {
        let mut err = S3Error::with_message(
            S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        );
        err.set_status_code(http::StatusCode::BAD_REQUEST);
        err
    } else {
        S3Error::with_message(S3ErrorCode::IncompleteBody, text.to_string())
    }
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp::from(SystemTime::from(at))
}

/// The checksum algorithms a request asks for, by header or trailer name.
const CHECKSUMS: [&str; 5] = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

/// Hashes the body with every checksum the client named, so the values it
/// sent (in headers or an aws-chunked trailer) can be checked before the
/// commit, then stored and echoed.
struct Checksums {
    hasher: Arc<std::sync::Mutex<s3s::checksum::ChecksumHasher>>,
    wanted: Vec<(&'static str, Option<String>)>,
}

impl Checksums {
    fn new(headers: &http::HeaderMap, algorithm: Option<&ChecksumAlgorithm>) -> Self {
        let trailer = headers
            .get("x-amz-trailer")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let algorithm = algorithm.map(|a| a.as_str().to_ascii_lowercase());
        let mut hasher = s3s::checksum::ChecksumHasher::default();
        let mut wanted = Vec::new();
        for name in CHECKSUMS {
            let header = format!("x-amz-checksum-{name}");
            let given = headers
                .get(&header)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if given.is_none() && !trailer.contains(&header) && algorithm.as_deref() != Some(name) {
                continue;
            }
            match name {
                "crc32" => hasher.crc32 = Some(Default::default()),
                "crc32c" => hasher.crc32c = Some(Default::default()),
                "crc64nvme" => hasher.crc64nvme = Some(Default::default()),
                "sha1" => hasher.sha1 = Some(Default::default()),
                _ => hasher.sha256 = Some(Default::default()),
            }
            wanted.push((name, given));
        }
        Self {
            hasher: Arc::new(std::sync::Mutex::new(hasher)),
            wanted,
        }
    }

    /// `body`, hashed as it passes.
    fn wrap(
        &self,
        body: StreamingBlob,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin + Send + 'static {
        let hasher = (!self.wanted.is_empty()).then(|| self.hasher.clone());
        body.map(move |piece| {
            let piece = piece.map_err(|e| std::io::Error::other(e.to_string()))?;
            if let Some(hasher) = &hasher {
                hasher.lock().expect("hasher lock").update(&piece);
            }
            Ok(piece)
        })
    }

    /// Checks the sent values (trailers read now, after the body) and
    /// returns the computed ones, `{"crc32": "base64", ..}`.
    fn finish(
        &self,
        trailers: Option<&s3s::TrailingHeaders>,
    ) -> Result<Map<String, Value>, StorageError> {
        let trailing = trailers.and_then(|t| t.take());
        let computed = std::mem::take(&mut *self.hasher.lock().expect("hasher lock")).finalize();
        let mut out = Map::new();
        for (name, given) in &self.wanted {
            let got = match *name {
                "crc32" => computed.checksum_crc32.clone(),
                "crc32c" => computed.checksum_crc32c.clone(),
                "crc64nvme" => computed.checksum_crc64nvme.clone(),
                "sha1" => computed.checksum_sha1.clone(),
                _ => computed.checksum_sha256.clone(),
            };
            let sent = given.clone().or_else(|| {
                trailing
                    .as_ref()
                    .and_then(|t| t.get(format!("x-amz-checksum-{name}")))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
            if sent.is_some() && sent != got {
                return Err(StorageError::BadDigest);
            }
            if let Some(got) = got {
                out.insert(name.to_string(), Value::String(got));
            }
        }
        Ok(out)
    }
}

fn check_part_number(part_number: i32) -> S3Result<()> {
    if !(1..=10_000).contains(&part_number) {
        return Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive"
        ));
    }
    Ok(())
}

/// The Content-MD5 a request sent; a header sent empty counts (and is
/// then refused as invalid) even where the parsed input dropped it.
fn content_md5<'a>(headers: &'a http::HeaderMap, parsed: Option<&'a str>) -> Option<&'a str> {
    parsed.or_else(|| headers.get("content-md5").and_then(|v| v.to_str().ok()))
}

/// Checks a Content-MD5 header (base64 of the 16-byte digest).
fn md5_check(content_md5: Option<&str>) -> S3Result<Option<[u8; 16]>> {
    use base64::Engine as _;
    let Some(raw) = content_md5 else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map_err(|_| s3_error!(InvalidDigest, "The Content-MD5 you specified was invalid."))?;
    let digest: [u8; 16] = bytes
        .try_into()
        .map_err(|_| s3_error!(InvalidDigest, "The Content-MD5 you specified was invalid."))?;
    Ok(Some(digest))
}

/// The stored metadata of an object: user metadata, standard headers,
/// checksums.
fn metadata_json(
    user: Option<&Metadata>,
    headers: [(&str, Option<&String>); 4],
    expires: Option<&Timestamp>,
    checksums: Map<String, Value>,
) -> Value {
    let mut standard = Map::new();
    if let Some(expires) = expires {
        let mut buf = Vec::new();
        if expires.format(TimestampFormat::HttpDate, &mut buf).is_ok() {
            standard.insert(
                "expires".to_string(),
                Value::String(String::from_utf8_lossy(&buf).into_owned()),
            );
        }
    }
    for (name, value) in headers {
        if let Some(value) = value {
            standard.insert(name.to_string(), Value::String(value.clone()));
        }
    }
    json!({
        "user": user.cloned().unwrap_or_default(),
        "headers": standard,
        "checksums": checksums,
    })
}

fn user_metadata(row: &ObjectRow) -> Option<Metadata> {
    let map = row.metadata["user"].as_object()?;
    let meta: Metadata = map
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    (!meta.is_empty()).then_some(meta)
}

fn standard_header(row: &ObjectRow, name: &str) -> Option<String> {
    row.metadata["headers"][name].as_str().map(str::to_string)
}

fn expires(row: &ObjectRow) -> Option<Timestamp> {
    let text = row.metadata["headers"]["expires"].as_str()?;
    Timestamp::parse(TimestampFormat::HttpDate, text).ok()
}

fn checksum(row: &ObjectRow, name: &str) -> Option<String> {
    row.metadata["checksums"][name].as_str().map(str::to_string)
}

fn strip_quotes(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

fn etag_matches(condition: &ETagCondition, etag: &str) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(tag) => strip_quotes(tag.value()) == etag,
    }
}

/// If-Match / If-None-Match / If-(Un)Modified-Since, as S3 orders them.
fn preconditions(
    row: &ObjectRow,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let modified = SystemTime::from(row.last_modified);
    let seconds = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let to_system = |t: &Timestamp| -> Option<SystemTime> {
        let mut buf = Vec::new();
        t.format(TimestampFormat::EpochSeconds, &mut buf).ok()?;
        let secs: f64 = std::str::from_utf8(&buf).ok()?.parse().ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)))
    };
    if let Some(condition) = if_match {
        if !etag_matches(condition, &row.etag) {
            return Err(s3_error!(PreconditionFailed));
        }
    } else if let Some(since) = if_unmodified_since.and_then(to_system) {
        if seconds(modified) > seconds(since) {
            return Err(s3_error!(PreconditionFailed));
        }
    }
    if let Some(condition) = if_none_match {
        if etag_matches(condition, &row.etag) {
            return Err(s3_error!(NotModified));
        }
    } else if let Some(since) = if_modified_since.and_then(to_system) {
        if seconds(modified) <= seconds(since) {
            return Err(s3_error!(NotModified));
        }
    }
    Ok(())
}

fn owner() -> Owner {
    Owner {
        display_name: Some("mds".to_string()),
        id: Some("mds".to_string()),
    }
}

impl Gateway {
    async fn bucket(&self, name: &str) -> S3Result<BucketRow> {
        self.0
            .bucket(name)
            .await?
            .ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist"))
    }

    async fn object(&self, bucket: &BucketRow, key: &str) -> S3Result<ObjectRow> {
        self.0.storage.object(bucket, key).await.map_err(s3_err)
    }

    /// Objects and common prefixes after `after`, up to `max_keys` in all,
    /// in key order; also whether more remain and the last entry returned
    /// (the next marker).
    async fn list(
        &self,
        bucket: &BucketRow,
        prefix: &str,
        delimiter: Option<&str>,
        after: &str,
        max_keys: usize,
    ) -> S3Result<Listing> {
        const BATCH: i64 = 1000;
        let store = self.0.storage.store();
        let mut listing = Listing::default();
        let mut cursor = after.to_string();
        loop {
            let batch = store
                .list_objects(&bucket.id, prefix, &cursor, BATCH)
                .await
                .map_err(|e| s3_err(e.into()))?;
            let full = batch.len() as i64 == BATCH;
            let mut jumped = false;
            for row in batch {
                let common = delimiter.and_then(|d| {
                    row.key[prefix.len()..]
                        .find(d)
                        .map(|at| row.key[..prefix.len() + at + d.len()].to_string())
                });
                if let Some(common) = common {
                    // Every key under this prefix is skipped in one step; a
                    // prefix at or before the marker was listed already.
                    cursor = format!("{common}\u{10FFFF}");
                    jumped = true;
                    if common.as_str() > after {
                        if listing.len() >= max_keys {
                            listing.truncated = true;
                            return Ok(listing);
                        }
                        listing.last = Some(common.clone());
                        listing.prefixes.push(common);
                    }
                    break;
                }
                if listing.len() >= max_keys {
                    listing.truncated = true;
                    return Ok(listing);
                }
                cursor = row.key.clone();
                listing.last = Some(row.key.clone());
                listing.objects.push(row);
            }
            if !jumped && !full {
                return Ok(listing);
            }
        }
    }

    /// A multipart upload in progress, with its bucket.
    async fn upload(&self, bucket: &str, upload_id: &str) -> S3Result<(BucketRow, UploadRow)> {
        let bucket = self.bucket(bucket).await?;
        let upload = self
            .0
            .storage
            .upload(&bucket, upload_id)
            .await
            .map_err(s3_err)?;
        Ok((bucket, upload))
    }

    /// The bucket and object a copy reads from, if this key may read it.
    async fn copy_source(
        &self,
        credentials: Option<&s3s::auth::Credentials>,
        source: &CopySource,
    ) -> S3Result<(BucketRow, ObjectRow)> {
        let CopySource::Bucket { bucket, key, .. } = source else {
            return Err(s3_error!(
                NotImplemented,
                "only bucket copy sources are supported"
            ));
        };
        if let Some(credentials) = credentials {
            let grant = self.0.grant(&credentials.access_key).await?;
            if let Some(allowed) = grant.and_then(|g| g.bucket_id) {
                let source = self.0.bucket(bucket).await?;
                if source.is_none_or(|b| b.id != allowed) {
                    return Err(s3_error!(AccessDenied, "Access Denied to the copy source"));
                }
            }
        }
        let bucket = self.bucket(bucket).await?;
        let object = self.object(&bucket, key).await?;
        Ok((bucket, object))
    }
}

/// One page of a listing.
#[derive(Default)]
struct Listing {
    objects: Vec<ObjectRow>,
    prefixes: Vec<String>,
    truncated: bool,
    last: Option<String>,
}

impl Listing {
    fn len(&self) -> usize {
        self.objects.len() + self.prefixes.len()
    }
}

fn object_entry(row: &ObjectRow) -> Object {
    Object {
        key: Some(row.key.clone()),
        e_tag: Some(ETag::Strong(row.etag.clone())),
        last_modified: Some(timestamp(row.last_modified)),
        size: Some(row.size),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        owner: Some(owner()),
        ..Default::default()
    }
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let scope = match &req.credentials {
            Some(c) => self.0.grant(&c.access_key).await?.and_then(|g| g.bucket_id),
            None => return Err(s3_error!(AccessDenied)),
        };
        let rows = self
            .0
            .storage
            .store()
            .buckets(None)
            .await
            .map_err(|e| s3_err(e.into()))?;
        let buckets = rows
            .into_iter()
            .filter(|b| scope.as_ref().is_none_or(|id| *id == b.id))
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_at)),
                bucket_region: Some(b.region),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner()),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let name = req.input.bucket;
        crate::check_bucket_name(&name)
            .map_err(|e| S3Error::with_message(S3ErrorCode::InvalidBucketName, e))?;
        let id = mds_core::ids::IdKind::Bucket.mint();
        let visibility = match req.input.acl.as_ref().map(|a| a.as_str()) {
            Some("public-read") | Some("public-read-write") => "public",
            _ => "private",
        };
        let created = self
            .0
            .storage
            .store()
            .create_bucket(&mds_store::NewBucket {
                id: &id,
                name: &name,
                project_id: None,
                binding_id: None,
                visibility,
            })
            .await
            .map_err(StorageError::from);
        match created {
            // As S3 in us-east-1: re-creating your own bucket is a no-op.
            Ok(_) | Err(StorageError::BucketExists) => {}
            Err(e) => return Err(s3_err(e)),
        }
        self.0.buckets.forget(&name);
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{name}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let bucket = self.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(bucket.region),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = self.bucket(&req.input.bucket).await?;
        if bucket.binding_id.is_some() {
            return Err(s3_error!(
                AccessDenied,
                "this bucket belongs to an attached storage service; delete the service instead"
            ));
        }
        self.0
            .storage
            .delete_bucket(&bucket, false)
            .await
            .map_err(s3_err)?;
        self.0.buckets.forget(&bucket.name);
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket).await?;
        crate::check_key(&input.key).map_err(|e| s3_err(StorageError::InvalidKey(e)))?;
        let limit = self.0.storage.config().max_object_bytes;
        if input.content_length.is_some_and(|n| n as u64 > limit) {
            return Err(s3_err(StorageError::TooLarge { limit }));
        }
        let expect_md5 = md5_check(content_md5(&req.headers, input.content_md5.as_deref()))?;
        let body = input
            .body
            .unwrap_or_else(|| StreamingBlob::from(s3s::Body::empty()));
        let checksums = Checksums::new(&req.headers, input.checksum_algorithm.as_ref());
        let trailers = req.trailing_headers.clone();
        let stream = checksums.wrap(body);
        let content_type = input
            .content_type
            .clone()
            .unwrap_or_else(|| "binary/octet-stream".to_string());
        let mut computed = Map::new();
        let row = self
            .0
            .storage
            .put_object(&bucket, &input.key, &content_type, stream, |md5| {
                if expect_md5.is_some_and(|want| want != md5) {
                    return Err(StorageError::BadDigest);
                }
                computed = checksums.finish(trailers.as_ref())?;
                Ok(metadata_json(
                    input.metadata.as_ref(),
                    [
                        ("cache-control", input.cache_control.as_ref()),
                        ("content-disposition", input.content_disposition.as_ref()),
                        ("content-encoding", input.content_encoding.as_ref()),
                        ("content-language", input.content_language.as_ref()),
                    ],
                    input.expires.as_ref(),
                    computed.clone(),
                ))
            })
            .await
            .map_err(s3_err)?;
        let get = |name: &str| {
            computed
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(row.etag)),
            checksum_crc32: get("crc32"),
            checksum_crc32c: get("crc32c"),
            checksum_crc64nvme: get("crc64nvme"),
            checksum_sha1: get("sha1"),
            checksum_sha256: get("sha256"),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket).await?;
        let row = self.object(&bucket, &input.key).await?;
        preconditions(
            &row,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let size = row.size as u64;
        let range = match &input.range {
            Some(range) => {
                let r = range.check(size)?;
                Some((r.start, r.end.saturating_sub(1)))
            }
            None => None,
        };
        let (length, content_range) = match range {
            Some((start, end)) if size > 0 => {
                (end - start + 1, Some(format!("bytes {start}-{end}/{size}")))
            }
            _ => (size, None),
        };
        let read_range = range.filter(|_| size > 0);
        let body = self
            .0
            .storage
            .read(&row, read_range)
            .await
            .map_err(s3_err)?;
        let whole = content_range.is_none();
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(SyncStream::new(body))),
            content_length: Some(length as i64),
            content_range,
            content_type: Some(row.content_type.clone()),
            e_tag: Some(ETag::Strong(row.etag.clone())),
            last_modified: Some(timestamp(row.last_modified)),
            metadata: user_metadata(&row),
            accept_ranges: Some("bytes".to_string()),
            cache_control: standard_header(&row, "cache-control"),
            content_disposition: standard_header(&row, "content-disposition"),
            content_encoding: standard_header(&row, "content-encoding"),
            content_language: standard_header(&row, "content-language"),
            expires: expires(&row),
            checksum_crc32: whole.then(|| checksum(&row, "crc32")).flatten(),
            checksum_crc32c: whole.then(|| checksum(&row, "crc32c")).flatten(),
            checksum_crc64nvme: whole.then(|| checksum(&row, "crc64nvme")).flatten(),
            checksum_sha1: whole.then(|| checksum(&row, "sha1")).flatten(),
            checksum_sha256: whole.then(|| checksum(&row, "sha256")).flatten(),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket).await?;
        let row = self.object(&bucket, &input.key).await?;
        preconditions(
            &row,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(row.size),
            content_type: Some(row.content_type.clone()),
            e_tag: Some(ETag::Strong(row.etag.clone())),
            last_modified: Some(timestamp(row.last_modified)),
            metadata: user_metadata(&row),
            accept_ranges: Some("bytes".to_string()),
            cache_control: standard_header(&row, "cache-control"),
            content_disposition: standard_header(&row, "content-disposition"),
            content_encoding: standard_header(&row, "content-encoding"),
            content_language: standard_header(&row, "content-language"),
            expires: expires(&row),
            checksum_crc32: checksum(&row, "crc32"),
            checksum_crc32c: checksum(&row, "crc32c"),
            checksum_crc64nvme: checksum(&row, "crc64nvme"),
            checksum_sha1: checksum(&row, "sha1"),
            checksum_sha256: checksum(&row, "sha256"),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let bucket = self.bucket(&req.input.bucket).await?;
        self.0
            .storage
            .delete_object(&bucket, &req.input.key)
            .await
            .map_err(s3_err)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        if req.input.delete.objects.len() > 1000 {
            return Err(s3_error!(
                MalformedXML,
                "DeleteObjects takes at most 1000 keys per request"
            ));
        }
        let bucket = self.bucket(&req.input.bucket).await?;
        let quiet = req.input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in req.input.delete.objects {
            match self.0.storage.delete_object(&bucket, &object.key).await {
                Ok(_) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(object.key),
                            ..Default::default()
                        });
                    }
                }
                Err(e) => {
                    let e = s3_err(e);
                    errors.push(Error {
                        code: Some(e.code().as_str().to_string()),
                        key: Some(object.key),
                        message: e.message().map(str::to_string),
                        ..Default::default()
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let (source_bucket, source) = self
            .copy_source(req.credentials.as_ref(), &input.copy_source)
            .await?;
        preconditions(
            &source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|e| {
            if *e.code() == S3ErrorCode::NotModified {
                s3_error!(PreconditionFailed)
            } else {
                e
            }
        })?;
        let bucket = self.bucket(&input.bucket).await?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && source_bucket.id == bucket.id && source.key == input.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself \
                 without changing the object's metadata."
            ));
        }
        let (content_type, metadata) = if replace {
            let mut checksums = Map::new();
            if let Some(stored) = source.metadata["checksums"].as_object() {
                checksums = stored.clone();
            }
            (
                input
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "binary/octet-stream".to_string()),
                metadata_json(
                    input.metadata.as_ref(),
                    [
                        ("cache-control", input.cache_control.as_ref()),
                        ("content-disposition", input.content_disposition.as_ref()),
                        ("content-encoding", input.content_encoding.as_ref()),
                        ("content-language", input.content_language.as_ref()),
                    ],
                    input.expires.as_ref(),
                    checksums,
                ),
            )
        } else {
            (source.content_type.clone(), source.metadata.clone())
        };
        let row = self
            .0
            .storage
            .copy_object(&source, &bucket, &input.key, &content_type, &metadata)
            .await
            .map_err(s3_err)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(row.etag)),
                last_modified: Some(timestamp(row.last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let marker = req.input.marker.clone();
        let v2 = self.list_objects_v2(req.map_input(Into::into)).await?;
        Ok(v2.map_output(|v2| {
            let next_marker = if v2.is_truncated == Some(true) {
                v2.next_continuation_token.clone()
            } else {
                None
            };
            ListObjectsOutput {
                name: v2.name,
                prefix: v2.prefix,
                delimiter: v2.delimiter,
                max_keys: v2.max_keys,
                is_truncated: v2.is_truncated,
                marker: Some(marker.unwrap_or_default()),
                next_marker,
                // v1 always names owners.
                contents: v2.contents.map(|objects| {
                    objects
                        .into_iter()
                        .map(|mut o| {
                            o.owner = Some(owner());
                            o
                        })
                        .collect()
                }),
                common_prefixes: v2.common_prefixes,
                encoding_type: v2.encoding_type,
                ..Default::default()
            }
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max_keys = input.max_keys.unwrap_or(1000);
        if max_keys < 0 {
            return Err(s3_error!(InvalidArgument, "max-keys cannot be negative"));
        }
        let max_keys = max_keys.min(1000);
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(token), Some(start)) => token.clone().max(start.clone()),
            (Some(token), None) => token.clone(),
            (None, Some(start)) => start.clone(),
            (None, None) => String::new(),
        };
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let Listing {
            objects,
            prefixes,
            truncated,
            last,
        } = if max_keys == 0 {
            Listing::default()
        } else {
            self.list(
                &bucket,
                &prefix,
                delimiter.as_deref(),
                &after,
                max_keys as usize,
            )
            .await?
        };
        let with_owner = input.fetch_owner == Some(true);
        let encode = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let out = |s: String| {
            if encode {
                mds_core::env::url_encode_path(&s)
            } else {
                s
            }
        };
        let key_count = (objects.len() + prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(bucket.name.clone()),
            prefix: Some(out(prefix)),
            delimiter: delimiter.map(out),
            max_keys: Some(max_keys),
            key_count: Some(key_count),
            is_truncated: Some(truncated),
            continuation_token: input.continuation_token.clone(),
            next_continuation_token: if truncated { last } else { None },
            start_after: input.start_after.clone().map(out),
            encoding_type: input.encoding_type.clone(),
            contents: Some(
                objects
                    .iter()
                    .map(|row| {
                        let mut entry = object_entry(row);
                        entry.key = entry.key.map(out);
                        if !with_owner {
                            entry.owner = None;
                        }
                        entry
                    })
                    .collect(),
            ),
            common_prefixes: Some(
                prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(out(p)),
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket).await?;
        let upload = UploadRow {
            id: mds_core::ids::IdKind::Upload.mint(),
            bucket_id: bucket.id.clone(),
            key: input.key.clone(),
            content_type: input
                .content_type
                .clone()
                .unwrap_or_else(|| "binary/octet-stream".to_string()),
            metadata: metadata_json(
                input.metadata.as_ref(),
                [
                    ("cache-control", input.cache_control.as_ref()),
                    ("content-disposition", input.content_disposition.as_ref()),
                    ("content-encoding", input.content_encoding.as_ref()),
                    ("content-language", input.content_language.as_ref()),
                ],
                input.expires.as_ref(),
                Map::new(),
            ),
            created_at: chrono::Utc::now(),
        };
        self.0
            .storage
            .create_upload(&upload)
            .await
            .map_err(s3_err)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(bucket.name),
            key: Some(input.key),
            upload_id: Some(upload.id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        check_part_number(input.part_number)?;
        let (_, upload) = self.upload(&input.bucket, &input.upload_id).await?;
        let expect_md5 = md5_check(content_md5(&req.headers, input.content_md5.as_deref()))?;
        let body = input
            .body
            .unwrap_or_else(|| StreamingBlob::from(s3s::Body::empty()));
        let checksums = Checksums::new(&req.headers, input.checksum_algorithm.as_ref());
        let trailers = req.trailing_headers.clone();
        let mut computed = Map::new();
        let md5 = self
            .0
            .storage
            .put_part(&upload, input.part_number, checksums.wrap(body), |md5| {
                if expect_md5.is_some_and(|want| want != md5) {
                    return Err(StorageError::BadDigest);
                }
                computed = checksums.finish(trailers.as_ref())?;
                Ok(())
            })
            .await
            .map_err(s3_err)?;
        let get = |name: &str| {
            computed
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(md5)),
            checksum_crc32: get("crc32"),
            checksum_crc32c: get("crc32c"),
            checksum_crc64nvme: get("crc64nvme"),
            checksum_sha1: get("sha1"),
            checksum_sha256: get("sha256"),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let (bucket, upload) = self.upload(&input.bucket, &input.upload_id).await?;
        let listed: Vec<(i32, String)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                (
                    p.part_number.unwrap_or(0),
                    p.e_tag
                        .map(|t| strip_quotes(t.value()).to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        if listed.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "You must specify at least one part"
            ));
        }
        let row = self
            .0
            .storage
            .complete_upload(&upload, &listed)
            .await
            .map_err(s3_err)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(bucket.name),
            key: Some(row.key),
            e_tag: Some(ETag::Strong(row.etag)),
            location: None,
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let (_, upload) = self.upload(&req.input.bucket, &req.input.upload_id).await?;
        self.0.storage.abort_upload(&upload).await.map_err(s3_err)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let (bucket, upload) = self.upload(&input.bucket, &input.upload_id).await?;
        let parts = self
            .0
            .storage
            .store()
            .parts(&upload.id)
            .await
            .map_err(|e| s3_err(e.into()))?;
        let marker = input.part_number_marker.unwrap_or(0);
        let max_parts = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let after: Vec<_> = parts
            .into_iter()
            .filter(|p| p.part_number > marker)
            .collect();
        let truncated = after.len() > max_parts;
        let shown: Vec<_> = after.into_iter().take(max_parts).collect();
        let next = shown.last().map(|p| p.part_number);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(bucket.name),
            key: Some(upload.key),
            upload_id: Some(upload.id),
            max_parts: Some(max_parts as i32),
            is_truncated: Some(truncated),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: if truncated { next } else { None },
            owner: Some(owner()),
            parts: Some(
                shown
                    .iter()
                    .map(|p| Part {
                        part_number: Some(p.part_number),
                        e_tag: Some(ETag::Strong(p.md5.clone())),
                        size: Some(p.size),
                        last_modified: Some(timestamp(p.last_modified)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        check_part_number(input.part_number)?;
        let (_, upload) = self.upload(&input.bucket, &input.upload_id).await?;
        let (_, source) = self
            .copy_source(req.credentials.as_ref(), &input.copy_source)
            .await?;
        preconditions(
            &source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|_| s3_error!(PreconditionFailed))?;
        let size = source.size as u64;
        let range = match input.copy_source_range.as_deref() {
            None => None,
            Some(raw) => {
                let bad = || {
                    s3_error!(
                        InvalidArgument,
                        "The x-amz-copy-source-range value must be bytes=first-last within the source object"
                    )
                };
                let (first, last) = raw
                    .trim()
                    .strip_prefix("bytes=")
                    .and_then(|r| r.split_once('-'))
                    .ok_or_else(bad)?;
                let first: u64 = first.parse().map_err(|_| bad())?;
                let last: u64 = last.parse().map_err(|_| bad())?;
                if first > last || last >= size {
                    return Err(bad());
                }
                Some((first, last))
            }
        };
        let body = self.0.storage.read(&source, range).await.map_err(s3_err)?;
        let md5 = self
            .0
            .storage
            .put_part(&upload, input.part_number, body, |_| Ok(()))
            .await
            .map_err(s3_err)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(md5)),
                last_modified: Some(Timestamp::from(SystemTime::now())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    /// Buckets are unversioned: every object is its only version, "null".
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000);
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let after = input.key_marker.clone().unwrap_or_default();
        let listing = if max_keys == 0 {
            Listing::default()
        } else {
            self.list(
                &bucket,
                &prefix,
                delimiter.as_deref(),
                &after,
                max_keys as usize,
            )
            .await?
        };
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(bucket.name),
            prefix: input.prefix,
            delimiter,
            key_marker: input.key_marker,
            max_keys: Some(max_keys),
            is_truncated: Some(listing.truncated),
            next_key_marker: if listing.truncated {
                listing.last
            } else {
                None
            },
            next_version_id_marker: listing.truncated.then(|| "null".to_string()),
            versions: Some(
                listing
                    .objects
                    .iter()
                    .map(|row| ObjectVersion {
                        key: Some(row.key.clone()),
                        version_id: Some("null".to_string()),
                        is_latest: Some(true),
                        e_tag: Some(ETag::Strong(row.etag.clone())),
                        last_modified: Some(timestamp(row.last_modified)),
                        size: Some(row.size),
                        owner: Some(owner()),
                        storage_class: Some(ObjectVersionStorageClass::from_static(
                            ObjectVersionStorageClass::STANDARD,
                        )),
                        ..Default::default()
                    })
                    .collect(),
            ),
            common_prefixes: Some(
                listing
                    .prefixes
                    .into_iter()
                    .map(|p| CommonPrefix { prefix: Some(p) })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let uploads = self
            .0
            .storage
            .store()
            .uploads(&bucket.id, &prefix)
            .await
            .map_err(|e| s3_err(e.into()))?;
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(bucket.name),
            prefix: input.prefix,
            is_truncated: Some(false),
            max_uploads: Some(1000),
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(u.key),
                        upload_id: Some(u.id),
                        initiated: Some(timestamp(u.created_at)),
                        owner: Some(owner()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
}

/// s3s wants a `Sync` body stream; ours is `Send` only, so it is polled
/// through a mutex that is never contended.
struct SyncStream(std::sync::Mutex<crate::ObjectStream>);

impl SyncStream {
    fn new(inner: crate::ObjectStream) -> Self {
        Self(std::sync::Mutex::new(inner))
    }
}

impl Stream for SyncStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let inner = self.get_mut().0.get_mut().expect("stream lock");
        inner.poll_next_unpin(cx)
    }
}
