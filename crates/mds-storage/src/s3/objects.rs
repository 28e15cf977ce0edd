//! Object operations: put, get, head, delete (one or many) and copy.

use mds_store::ObjectRow;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};
use serde_json::Map;

use super::checksums::{Checksums, Sums};
use super::wire::{
    conditions_of, content_type, expires, metadata_of, s3_err, standard_header, timestamp,
    user_metadata, Conditions, SyncStream,
};
use super::Gateway;
use crate::StorageError;

pub(super) async fn put_object(
    gw: &Gateway,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let input = req.input;
    let bucket = gw.bucket(&input.bucket).await?;
    crate::check_key(&input.key).map_err(|e| s3_err(StorageError::InvalidKey(e)))?;
    let limit = gw.0.storage.config().max_object_bytes;
    if input.content_length.is_some_and(|n| n as u64 > limit) {
        return Err(s3_err(StorageError::TooLarge { limit }));
    }
    let checksums = Checksums::new(
        &req.headers,
        req.trailing_headers.clone(),
        input.content_md5.as_deref(),
        input.checksum_algorithm.as_ref(),
    )?;
    let stream = checksums.wrap(input.body);
    let content_type = content_type(input.content_type.as_ref());
    let mut computed = Map::new();
    let row =
        gw.0.storage
            .put_object(&bucket, &input.key, &content_type, stream, |md5| {
                computed = checksums.finish(md5)?;
                Ok(metadata_of!(input, computed.clone()))
            })
            .await
            .map_err(s3_err)?;
    let sums = Sums::from_json(&computed);
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(ETag::Strong(row.etag)),
        checksum_crc32: sums.crc32,
        checksum_crc32c: sums.crc32c,
        checksum_crc64nvme: sums.crc64nvme,
        checksum_sha1: sums.sha1,
        checksum_sha256: sums.sha256,
        ..Default::default()
    }))
}

/// The object a GET or HEAD reads, once its conditions hold.
async fn readable(
    gw: &Gateway,
    bucket: &str,
    key: &str,
    conditions: Conditions<'_>,
) -> S3Result<ObjectRow> {
    let bucket = gw.bucket(bucket).await?;
    let row = gw.object(&bucket, key).await?;
    conditions.check(&row)?;
    Ok(row)
}

/// `$output` (HeadObjectOutput or GetObjectOutput) with an object's stored
/// headers and `$sums`, and the `$field`s given. The two outputs share these
/// fields by name, not by a type.
macro_rules! object_headers {
    ($row:expr, $sums:expr, $output:ident { $($field:ident: $value:expr),* $(,)? }) => {{
        let row: &ObjectRow = $row;
        let sums: Sums = $sums;
        $output {
            $($field: $value,)*
            content_type: Some(row.content_type.clone()),
            e_tag: Some(ETag::Strong(row.etag.clone())),
            last_modified: Some(timestamp(row.last_modified)),
            metadata: user_metadata(row),
            accept_ranges: Some("bytes".to_string()),
            cache_control: standard_header(row, "cache-control"),
            content_disposition: standard_header(row, "content-disposition"),
            content_encoding: standard_header(row, "content-encoding"),
            content_language: standard_header(row, "content-language"),
            expires: expires(row),
            checksum_crc32: sums.crc32,
            checksum_crc32c: sums.crc32c,
            checksum_crc64nvme: sums.crc64nvme,
            checksum_sha1: sums.sha1,
            checksum_sha256: sums.sha256,
            ..Default::default()
        }
    }};
}

pub(super) async fn head_object(
    gw: &Gateway,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let input = req.input;
    let row = readable(gw, &input.bucket, &input.key, conditions_of!(input)).await?;
    Ok(S3Response::new(object_headers!(
        &row,
        Sums::stored(&row),
        HeadObjectOutput {
            content_length: Some(row.size),
        }
    )))
}

pub(super) async fn get_object(
    gw: &Gateway,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let input = req.input;
    let row = readable(gw, &input.bucket, &input.key, conditions_of!(input)).await?;
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
    let body = gw.0.storage.read(&row, read_range).await.map_err(s3_err)?;
    // A range's checksums would be the whole object's: S3 sends none.
    let sums = Sums::stored(&row).only_if(content_range.is_none());
    Ok(S3Response::new(object_headers!(
        &row,
        sums,
        GetObjectOutput {
            body: Some(StreamingBlob::wrap(SyncStream::new(body))),
            content_length: Some(length as i64),
            content_range: content_range,
        }
    )))
}

pub(super) async fn delete_object(
    gw: &Gateway,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let bucket = gw.bucket(&req.input.bucket).await?;
    gw.0.storage
        .delete_object(&bucket, &req.input.key)
        .await
        .map_err(s3_err)?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

pub(super) async fn delete_objects(
    gw: &Gateway,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    if req.input.delete.objects.len() > 1000 {
        return Err(s3_error!(
            MalformedXML,
            "DeleteObjects takes at most 1000 keys per request"
        ));
    }
    let bucket = gw.bucket(&req.input.bucket).await?;
    let quiet = req.input.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for object in req.input.delete.objects {
        match gw.0.storage.delete_object(&bucket, &object.key).await {
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

pub(super) async fn copy_object(
    gw: &Gateway,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let input = req.input;
    let (source_bucket, source) = gw
        .copy_source(
            req.credentials.as_ref(),
            &input.copy_source,
            conditions_of!(copy source of input),
        )
        .await?;
    let bucket = gw.bucket(&input.bucket).await?;
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
        // New headers and user metadata; the bytes, so their checksums, stay.
        let checksums = source.metadata["checksums"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        (
            content_type(input.content_type.as_ref()),
            metadata_of!(input, checksums),
        )
    } else {
        (source.content_type.clone(), source.metadata.clone())
    };
    let row =
        gw.0.storage
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
