//! The S3 gateway: the S3 protocol (via s3s) over [`Storage`].
//!
//! s3s parses requests and checks SigV4 signatures (headers and presigned
//! URLs) against the secret a [`KeySource`] returns. Everything else is
//! ours: which buckets a key opens (`access.rs`), Content-MD5 and checksum
//! checks before a commit (`checksums.rs`), listing (`listing.rs`),
//! multipart (`multipart.rs`) and conditional requests (`wire.rs`, with the
//! rest of the mapping between s3s's types and the storage layer), and what
//! the raw HTTP needs around s3s (`front.rs`). Each S3
//! operation is a function in the file of its kind (`buckets.rs`,
//! `objects.rs`, `listing.rs`, `multipart.rs`); [`Gateway`]'s `S3` impl
//! here only names them.

mod access;
mod buckets;
mod checksums;
mod front;
mod listing;
mod multipart;
mod objects;
mod sse;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use mds_store::ObjectRow;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

pub use access::{Grant, KeySource};
pub use sse::is_sealed;

use crate::{BucketRow, Storage};

struct Shared {
    storage: Storage,
    keys: Arc<dyn KeySource>,
    grants: access::Cached<Grant>,
    buckets: access::Cached<BucketRow>,
}

/// The S3 service: build with [`gateway`], serve with [`serve`].
pub struct Gateway(Arc<Shared>);

pub fn gateway(storage: Storage, keys: Arc<dyn KeySource>) -> s3s::service::S3Service {
    let shared = Arc::new(Shared {
        storage,
        keys,
        grants: access::Cached::new(),
        buckets: access::Cached::new(),
    });
    let mut builder = s3s::service::S3ServiceBuilder::new(Gateway(shared.clone()));
    builder.set_auth(access::Auth(shared.clone()));
    builder.set_access(access::Access(shared));
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
        let front = front::Front(service.clone());
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), front);
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

impl Gateway {
    async fn bucket(&self, name: &str) -> S3Result<BucketRow> {
        self.0
            .bucket(name)
            .await?
            .ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist"))
    }

    async fn object(&self, bucket: &BucketRow, key: &str) -> S3Result<ObjectRow> {
        self.0
            .storage
            .object(bucket, key)
            .await
            .map_err(wire::s3_err)
    }
}

/// The operations offered; s3s answers NotImplemented to the rest.
#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        buckets::list_buckets(self, req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        buckets::create_bucket(self, req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        buckets::head_bucket(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        buckets::get_bucket_location(self, req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        buckets::delete_bucket(self, req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        objects::put_object(self, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        objects::get_object(self, req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        objects::head_object(self, req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        objects::get_object_attributes(self, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        objects::delete_object(self, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        objects::delete_objects(self, req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        objects::copy_object(self, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        listing::list_objects(self, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        listing::list_objects_v2(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        listing::list_object_versions(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create_multipart_upload(self, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        multipart::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(self, req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_multipart_uploads(self, req).await
    }
}
