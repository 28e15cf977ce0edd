//! Object operations: put, get, head, delete (one or many) and copy.

use futures_util::StreamExt;
use mds_store::ObjectRow;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};
use serde_json::Map;

use super::checksums::{Checksums, Sums};
use super::sse::{self, customer_key_of, Seal};
use super::wire::{
    conditions_of, content_type, expires, metadata_of, put_condition_of, s3_err, standard_header,
    timestamp, user_metadata, Conditions, SyncStream,
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
    let seal = Seal::for_put(
        gw.0.storage.sse_root(),
        customer_key_of!(input)?,
        input.server_side_encryption.as_ref(),
    )?;
    // Checksums are of the plaintext; the store sees ciphertext if sealed.
    let stream = checksums.wrap(input.body);
    let stream = match &seal {
        Some(seal) => seal.encrypt(stream),
        None => stream.boxed(),
    };
    let content_type = content_type(input.content_type.as_ref());
    let mut computed = Map::new();
    let row =
        gw.0.storage
            .put_object_if(
                &bucket,
                &input.key,
                &content_type,
                stream,
                put_condition_of!(input),
                |md5| {
                    let md5 = seal.as_ref().map_or(md5, Seal::plain_md5);
                    computed = checksums.finish(md5)?;
                    let mut metadata = metadata_of!(input, computed.clone());
                    if let (Some(seal), Some(m)) = (&seal, metadata.as_object_mut()) {
                        m.insert("sse".into(), seal.record());
                    }
                    Ok(metadata)
                },
            )
            .await
            .map_err(s3_err)?;
    let sums = Sums::from_json(&computed);
    let sse = seal
        .map(|s| s.reported(input.sse_customer_key_md5.clone()))
        .unwrap_or_default();
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(ETag::Strong(row.etag)),
        checksum_crc32: sums.crc32,
        checksum_crc32c: sums.crc32c,
        checksum_crc64nvme: sums.crc64nvme,
        checksum_sha1: sums.sha1,
        checksum_sha256: sums.sha256,
        server_side_encryption: sse.server_side_encryption,
        sse_customer_algorithm: sse.sse_customer_algorithm,
        sse_customer_key_md5: sse.sse_customer_key_md5,
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
            checksum_type: sums.kind.map(ChecksumType::from),
            ..Default::default()
        }
    }};
}

/// What a GET or HEAD reads of an object: the bytes (first, last) of a
/// `partNumber` or a Range (`None`: all of them), the Content-Range that
/// says so, and the object's part count when a part was asked for.
struct Extent {
    range: Option<(u64, u64)>,
    content_range: Option<String>,
    parts_count: Option<i32>,
}

impl Extent {
    fn of(row: &ObjectRow, part_number: Option<i32>, range: Option<&Range>) -> S3Result<Self> {
        let size = row.size as u64;
        let range = match (part_number, range) {
            (Some(_), Some(_)) => {
                return Err(s3_error!(
                    InvalidRequest,
                    "Cannot specify both Range header and partNumber query parameter"
                ))
            }
            (Some(n), None) => Some(part_range(row, n)?),
            (None, Some(range)) => {
                let r = range.check(size)?;
                Some((r.start, r.end.saturating_sub(1)))
            }
            (None, None) => None,
        };
        // An empty object has no bytes to name: it is sent whole.
        let range = range.filter(|_| size > 0);
        Ok(Self {
            range,
            content_range: range.map(|(start, end)| format!("bytes {start}-{end}/{size}")),
            parts_count: part_number.and_then(|_| part_sizes(row).map(|p| p.len() as i32)),
        })
    }

    fn length(&self, row: &ObjectRow) -> i64 {
        match self.range {
            Some((start, end)) => (end - start + 1) as i64,
            None => row.size,
        }
    }
}

/// The sizes of a multipart object's parts, in order (kept at completion).
fn part_sizes(row: &ObjectRow) -> Option<Vec<u64>> {
    row.metadata["parts"]
        .as_array()
        .map(|parts| parts.iter().filter_map(|p| p.as_u64()).collect())
}

/// The bytes (first, last) of part `n`; an object uploaded whole is its
/// own part 1.
fn part_range(row: &ObjectRow, n: i32) -> S3Result<(u64, u64)> {
    let sizes = part_sizes(row).unwrap_or_else(|| vec![row.size as u64]);
    let bad = || s3_error!(InvalidPart, "The requested partnumber is not satisfiable");
    let index = usize::try_from(n)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(bad)?
        - 1;
    let size = *sizes.get(index).ok_or_else(bad)?;
    let start: u64 = sizes[..index].iter().sum();
    Ok((start, (start + size).saturating_sub(1)))
}

/// The stored checksums, only if the client asked for them
/// (`x-amz-checksum-mode: ENABLED`) and reads the whole object or one part
/// whose checksum was kept: a range has none of its own.
fn sums_for(
    row: &ObjectRow,
    mode: Option<&ChecksumMode>,
    part_number: Option<i32>,
    extent: &Extent,
) -> Sums {
    let enabled = mode.is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
    match part_number {
        Some(n) if extent.parts_count.is_some() => Sums::of_part(row, n).only_if(enabled),
        _ => Sums::stored(row).only_if(enabled && extent.range.is_none()),
    }
}

pub(super) async fn head_object(
    gw: &Gateway,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let input = req.input;
    let row = readable(gw, &input.bucket, &input.key, conditions_of!(input)).await?;
    let opened = sse::open(gw.0.storage.sse_root(), &row, customer_key_of!(input)?)?;
    let sse = opened.map(|o| o.reported).unwrap_or_default();
    // A Range is not applied: s3s answers a HEAD with 200 only, and a 200
    // with a shorter Content-Length would misstate the object's size.
    let extent = Extent::of(&row, input.part_number, None)?;
    Ok(S3Response::new(object_headers!(
        &row,
        sums_for(
            &row,
            input.checksum_mode.as_ref(),
            input.part_number,
            &extent
        ),
        HeadObjectOutput {
            content_length: Some(extent.length(&row)),
            content_range: extent.content_range.clone(),
            parts_count: extent.parts_count,
            server_side_encryption: sse.server_side_encryption,
            sse_customer_algorithm: sse.sse_customer_algorithm,
            sse_customer_key_md5: sse.sse_customer_key_md5,
        }
    )))
}

pub(super) async fn get_object(
    gw: &Gateway,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let input = req.input;
    let row = readable(gw, &input.bucket, &input.key, conditions_of!(input)).await?;
    let opened = sse::open(gw.0.storage.sse_root(), &row, customer_key_of!(input)?)?;
    let extent = Extent::of(&row, input.part_number, input.range.as_ref())?;
    let body =
        gw.0.storage
            .read(&row, extent.range)
            .await
            .map_err(s3_err)?;
    let (body, sse) = match opened {
        Some(mut opened) => {
            let offset = extent.range.map_or(0, |(start, _)| start);
            let reported = std::mem::take(&mut opened.reported);
            (opened.decrypt(body, offset), reported)
        }
        None => (body, Default::default()),
    };
    Ok(S3Response::new(object_headers!(
        &row,
        sums_for(
            &row,
            input.checksum_mode.as_ref(),
            input.part_number,
            &extent
        ),
        GetObjectOutput {
            body: Some(StreamingBlob::wrap(SyncStream::new(body))),
            content_length: Some(extent.length(&row)),
            content_range: extent.content_range.clone(),
            parts_count: extent.parts_count,
            server_side_encryption: sse.server_side_encryption,
            sse_customer_algorithm: sse.sse_customer_algorithm,
            sse_customer_key_md5: sse.sse_customer_key_md5,
        }
    )))
}

pub(super) async fn get_object_attributes(
    gw: &Gateway,
    req: S3Request<GetObjectAttributesInput>,
) -> S3Result<S3Response<GetObjectAttributesOutput>> {
    let input = req.input;
    let bucket = gw.bucket(&input.bucket).await?;
    let row = gw.object(&bucket, &input.key).await?;
    // An SSE-C object tells of itself only to its key, as a read does.
    sse::open(gw.0.storage.sse_root(), &row, customer_key_of!(input)?)?;
    // Clients send one comma-separated header, which s3s keeps whole.
    let wants = |name: &str| {
        input
            .object_attributes
            .iter()
            .flat_map(|a| a.as_str().split(','))
            .any(|a| a.trim() == name)
    };
    let sums = Sums::stored(&row);
    let checksum = (wants(ObjectAttributes::CHECKSUM) && sums.get_any()).then(|| Checksum {
        checksum_crc32: sums.crc32.clone(),
        checksum_crc32c: sums.crc32c.clone(),
        checksum_crc64nvme: sums.crc64nvme.clone(),
        checksum_sha1: sums.sha1.clone(),
        checksum_sha256: sums.sha256.clone(),
        checksum_type: sums.kind.clone().map(ChecksumType::from),
    });
    let object_parts = part_sizes(&row)
        .filter(|_| wants(ObjectAttributes::OBJECT_PARTS))
        .map(|sizes| {
            let marker = input.part_number_marker.unwrap_or(0);
            let max = input.max_parts.unwrap_or(1000).clamp(0, 1000);
            let numbered: Vec<(i32, u64)> = (1..).zip(sizes).filter(|(n, _)| *n > marker).collect();
            let truncated = numbered.len() > max as usize;
            let shown: Vec<_> = numbered.into_iter().take(max as usize).collect();
            GetObjectAttributesParts {
                total_parts_count: part_sizes(&row).map(|p| p.len() as i32),
                part_number_marker: input.part_number_marker,
                next_part_number_marker: truncated.then(|| shown.last().map(|p| p.0)).flatten(),
                max_parts: Some(max),
                is_truncated: Some(truncated),
                parts: Some(
                    shown
                        .iter()
                        .map(|&(n, size)| {
                            let part = Sums::of_part(&row, n);
                            ObjectPart {
                                part_number: Some(n),
                                size: Some(size as i64),
                                checksum_crc32: part.crc32,
                                checksum_crc32c: part.crc32c,
                                checksum_crc64nvme: part.crc64nvme,
                                checksum_sha1: part.sha1,
                                checksum_sha256: part.sha256,
                            }
                        })
                        .collect(),
                ),
            }
        });
    Ok(S3Response::new(GetObjectAttributesOutput {
        e_tag: wants(ObjectAttributes::ETAG).then(|| ETag::Strong(row.etag.clone())),
        last_modified: Some(timestamp(row.last_modified)),
        object_size: wants(ObjectAttributes::OBJECT_SIZE).then_some(row.size),
        storage_class: wants(ObjectAttributes::STORAGE_CLASS)
            .then(|| StorageClass::from_static(StorageClass::STANDARD)),
        checksum,
        object_parts,
        ..Default::default()
    }))
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
        // The copy is no upload's result: a repeated Complete of the
        // source's upload must not answer from it.
        let mut metadata = source.metadata.clone();
        if let Some(m) = metadata.as_object_mut() {
            m.remove(super::multipart::UPLOAD_ID);
        }
        (source.content_type.clone(), metadata)
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
