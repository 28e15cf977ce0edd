//! Which buckets a request may open: access keys resolve to [`Grant`]s
//! (cached briefly), and s3s's auth and access hooks check them per bucket.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mds_store::ObjectRow;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{Credentials, S3Auth, SecretKey};
use s3s::dto::CopySource;
use s3s::path::S3Path;
use s3s::{s3_error, S3Result};

use super::wire::{s3_err, Conditions};
use super::{Gateway, Shared};
use crate::{BucketRow, StorageError};

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

pub(super) struct Cached<T> {
    map: RwLock<HashMap<String, (Option<T>, Instant)>>,
}

impl<T: Clone> Cached<T> {
    pub(super) fn new() -> Self {
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

    pub(super) fn forget(&self, key: &str) {
        self.map.write().expect("cache lock").remove(key);
    }
}

impl Shared {
    pub(super) async fn grant(&self, access_key: &str) -> S3Result<Option<Grant>> {
        if let Some(hit) = self.grants.get(access_key) {
            return Ok(hit);
        }
        let grant = self.keys.grant(access_key).await.map_err(s3_err)?;
        self.grants.put(access_key, grant.clone());
        Ok(grant)
    }

    pub(super) async fn bucket(&self, name: &str) -> S3Result<Option<BucketRow>> {
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

/// s3s's SigV4 check asks this for the secret of an access key.
pub(super) struct Auth(pub(super) Arc<Shared>);

/// s3s asks this, once a signature holds, whether the key opens the bucket.
pub(super) struct Access(pub(super) Arc<Shared>);

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
        refuse_encryption(op, cx.headers())?;
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

/// Server-side encryption is offered where it is implemented (`sse.rs`):
/// PutObject and CreateMultipartUpload (SSE-C and SSE-S3), and an SSE-C
/// key on UploadPart, CompleteMultipartUpload, GetObject, HeadObject and
/// GetObjectAttributes.
/// Anywhere else (copies) a request asking for it is refused before it
/// stores or reads anything: storing bytes unencrypted while the client
/// believes them sealed would be silent data exposure.
fn refuse_encryption(op: &str, headers: &http::HeaderMap) -> S3Result<()> {
    let asked = headers.keys().find(|name| {
        let name = name.as_str();
        let customer = name.starts_with("x-amz-server-side-encryption-customer-");
        let any = name.starts_with("x-amz-server-side-encryption")
            || name.starts_with("x-amz-copy-source-server-side-encryption");
        match op {
            "PutObject" | "CreateMultipartUpload" => {
                name.starts_with("x-amz-copy-source-server-side-encryption")
            }
            "GetObject"
            | "HeadObject"
            | "GetObjectAttributes"
            | "UploadPart"
            | "CompleteMultipartUpload" => any && !customer,
            _ => any,
        }
    });
    match asked {
        Some(name) => Err(s3_error!(
            NotImplemented,
            "server-side encryption is not supported for this operation ({name} given); \
             nothing was stored or read"
        )),
        None => Ok(()),
    }
}

impl Gateway {
    /// The bucket and object a copy reads from, if this key may read it and
    /// the x-amz-copy-source-if-* `conditions` hold.
    pub(super) async fn copy_source(
        &self,
        credentials: Option<&Credentials>,
        source: &CopySource,
        conditions: Conditions<'_>,
    ) -> S3Result<(BucketRow, ObjectRow)> {
        let CopySource::Bucket { bucket, key, .. } = source else {
            return Err(s3_error!(
                NotImplemented,
                "only bucket copy sources are supported"
            ));
        };
        // s3s checked the destination bucket only; the source is ours to check.
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
        if super::sse::is_sealed(&object) {
            return Err(s3_error!(
                NotImplemented,
                "copying a server-side encrypted object is not supported"
            ));
        }
        // A copy has nothing to answer 304 with: an unmet condition of
        // either kind fails it.
        conditions
            .check(&object)
            .map_err(|_| s3_error!(PreconditionFailed))?;
        Ok((bucket, object))
    }
}
