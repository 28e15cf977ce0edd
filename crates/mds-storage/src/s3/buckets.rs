//! Bucket operations: list, create, head, location, delete.

use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::wire::{owner, s3_err, timestamp};
use super::Gateway;
use crate::StorageError;

pub(super) async fn list_buckets(
    gw: &Gateway,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let scope = match &req.credentials {
        Some(c) => gw.0.grant(&c.access_key).await?.and_then(|g| g.bucket_id),
        None => return Err(s3_error!(AccessDenied)),
    };
    let rows =
        gw.0.storage
            .store()
            .buckets(None)
            .await
            .map_err(|e| s3_err(e.into()))?;
    let input = req.input;
    let max = match input.max_buckets {
        Some(n) if !(1..=10_000).contains(&n) => {
            return Err(s3_error!(
                InvalidArgument,
                "max-buckets must be an integer between 1 and 10000"
            ))
        }
        Some(n) => n as usize,
        None => usize::MAX,
    };
    let prefix = input.prefix.clone().unwrap_or_default();
    // Rows come sorted by name; a continuation token is the last name of
    // the page before.
    let after = input.continuation_token.clone().unwrap_or_default();
    let mut shown: Vec<_> = rows
        .into_iter()
        .filter(|b| scope.as_ref().is_none_or(|id| *id == b.id))
        .filter(|b| b.name.starts_with(&prefix) && b.name > after)
        .take(max.saturating_add(1))
        .collect();
    let more = shown.len() > max;
    shown.truncate(max);
    let next = more.then(|| shown.last().map(|b| b.name.clone())).flatten();
    let buckets = shown
        .into_iter()
        .map(|b| Bucket {
            name: Some(b.name),
            creation_date: Some(timestamp(b.created_at)),
            bucket_region: Some(b.region),
        })
        .collect();
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(owner()),
        continuation_token: next,
        prefix: input.prefix,
    }))
}

pub(super) async fn create_bucket(
    gw: &Gateway,
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
    let created =
        gw.0.storage
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
    gw.0.buckets.forget(&name);
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{name}")),
    }))
}

pub(super) async fn head_bucket(
    gw: &Gateway,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    let bucket = gw.bucket(&req.input.bucket).await?;
    Ok(S3Response::new(HeadBucketOutput {
        bucket_region: Some(bucket.region),
        ..Default::default()
    }))
}

pub(super) async fn get_bucket_location(
    gw: &Gateway,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    gw.bucket(&req.input.bucket).await?;
    Ok(S3Response::new(GetBucketLocationOutput::default()))
}

pub(super) async fn delete_bucket(
    gw: &Gateway,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let bucket = gw.bucket(&req.input.bucket).await?;
    if bucket.binding_id.is_some() {
        return Err(s3_error!(
            AccessDenied,
            "this bucket belongs to an attached storage service; delete the service instead"
        ));
    }
    gw.0.storage
        .delete_bucket(&bucket, false)
        .await
        .map_err(s3_err)?;
    gw.0.buckets.forget(&bucket.name);
    Ok(S3Response::new(DeleteBucketOutput::default()))
}
