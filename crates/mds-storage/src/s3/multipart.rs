//! Multipart uploads: create, upload a part (sent or copied), list parts,
//! complete, abort, and list the uploads in progress.

use std::time::SystemTime;

use futures_util::StreamExt;
use mds_store::{ObjectRow, UploadRow};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};
use serde_json::{json, Map, Value};

use super::checksums::{multipart_checksum, sums_of, Checksums, Sums};
use super::sse::{self, customer_key_of, Seal};
use super::wire::{
    conditions_of, content_type, metadata_of, owner, put_condition_of, s3_err, strip_quotes,
    timestamp,
};
use super::Gateway;
use crate::{BucketRow, StorageError};

fn check_part_number(part_number: i32) -> S3Result<()> {
    if !(1..=10_000).contains(&part_number) {
        return Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive"
        ));
    }
    Ok(())
}

/// A multipart upload in progress, with its bucket.
async fn upload(gw: &Gateway, bucket: &str, upload_id: &str) -> S3Result<(BucketRow, UploadRow)> {
    let bucket = gw.bucket(bucket).await?;
    let upload =
        gw.0.storage
            .upload(&bucket, upload_id)
            .await
            .map_err(s3_err)?;
    Ok((bucket, upload))
}

pub(super) async fn create_multipart_upload(
    gw: &Gateway,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let input = req.input;
    let bucket = gw.bucket(&input.bucket).await?;
    // The algorithm the parts are checksummed with, as S3 echoes it; a
    // type not given is S3's default for the algorithm.
    let checksum_type = input.checksum_algorithm.as_ref().map(|a| {
        input.checksum_type.clone().unwrap_or_else(|| {
            ChecksumType::from_static(if a.as_str() == ChecksumAlgorithm::CRC64NVME {
                ChecksumType::FULL_OBJECT
            } else {
                ChecksumType::COMPOSITE
            })
        })
    });
    let sse = sse::upload_record(
        gw.0.storage.sse_root(),
        customer_key_of!(input)?,
        input.server_side_encryption.as_ref(),
    )?;
    let mut metadata = metadata_of!(input, Map::new());
    if let Some(m) = metadata.as_object_mut() {
        if let Some(sse) = &sse {
            m.insert("sse".into(), sse.clone());
        }
        // Every part is checksummed with it, and the object's checksum is
        // made of theirs at completion.
        if let (Some(algorithm), Some(kind)) = (&input.checksum_algorithm, &checksum_type) {
            m.insert(
                "checksum".into(),
                json!({
                    "algorithm": algorithm.as_str().to_ascii_lowercase(),
                    "type": kind.as_str(),
                }),
            );
        }
    }
    let upload = UploadRow {
        id: mds_core::ids::IdKind::Upload.mint(),
        bucket_id: bucket.id.clone(),
        key: input.key.clone(),
        content_type: content_type(input.content_type.as_ref()),
        metadata,
        created_at: chrono::Utc::now(),
    };
    gw.0.storage.create_upload(&upload).await.map_err(s3_err)?;
    let reported = sse::reported(sse.as_ref(), input.sse_customer_key_md5);
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(bucket.name),
        key: Some(input.key),
        upload_id: Some(upload.id),
        checksum_algorithm: input.checksum_algorithm,
        checksum_type,
        server_side_encryption: reported.server_side_encryption,
        sse_customer_algorithm: reported.sse_customer_algorithm,
        sse_customer_key_md5: reported.sse_customer_key_md5,
        ..Default::default()
    }))
}

pub(super) async fn upload_part(
    gw: &Gateway,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let input = req.input;
    check_part_number(input.part_number)?;
    let (_, upload) = upload(gw, &input.bucket, &input.upload_id).await?;
    // The upload's algorithm applies to every part, named or not.
    let algorithm = input.checksum_algorithm.clone().or_else(|| {
        upload.metadata["checksum"]["algorithm"]
            .as_str()
            .map(|a| ChecksumAlgorithm::from(a.to_ascii_uppercase()))
    });
    let checksums = Checksums::new(
        &req.headers,
        req.trailing_headers.clone(),
        input.content_md5.as_deref(),
        algorithm.as_ref(),
    )?;
    let seal = sse::seal_part(
        gw.0.storage.sse_root(),
        &upload.metadata["sse"],
        customer_key_of!(input)?,
    )?;
    // As for PutObject: checksums of the plaintext, the store sees ciphertext.
    let body = checksums.wrap(input.body);
    let body = match &seal {
        Some(seal) => seal.encrypt(body),
        None => body.boxed(),
    };
    let mut computed = Map::new();
    let md5 =
        gw.0.storage
            .put_part(&upload, input.part_number, body, |md5| {
                let md5 = seal.as_ref().map_or(md5, Seal::plain_md5);
                computed = checksums.finish(md5)?;
                let mut meta = json!({ "checksums": computed.clone() });
                if let Some(seal) = &seal {
                    meta["iv"] = seal.record()["iv"].clone();
                }
                Ok(meta)
            })
            .await
            .map_err(s3_err)?;
    let sums = Sums::from_json(&computed);
    let reported = sse::reported(
        seal.as_ref().map(|_| &upload.metadata["sse"]),
        input.sse_customer_key_md5,
    );
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(ETag::Strong(md5)),
        checksum_crc32: sums.crc32,
        checksum_crc32c: sums.crc32c,
        checksum_crc64nvme: sums.crc64nvme,
        checksum_sha1: sums.sha1,
        checksum_sha256: sums.sha256,
        server_side_encryption: reported.server_side_encryption,
        sse_customer_algorithm: reported.sse_customer_algorithm,
        sse_customer_key_md5: reported.sse_customer_key_md5,
        ..Default::default()
    }))
}

/// The byte range (first, last) an x-amz-copy-source-range names within a
/// source of `size` bytes.
fn copy_range(raw: Option<&str>, size: u64) -> S3Result<Option<(u64, u64)>> {
    let Some(raw) = raw else {
        return Ok(None);
    };
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
    if first > last {
        return Err(bad());
    }
    // Well-formed but past the source's end: S3's answer is 416.
    if last >= size {
        return Err(s3_err(StorageError::InvalidRange));
    }
    Ok(Some((first, last)))
}

pub(super) async fn upload_part_copy(
    gw: &Gateway,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let input = req.input;
    check_part_number(input.part_number)?;
    let (_, upload) = upload(gw, &input.bucket, &input.upload_id).await?;
    if !upload.metadata["sse"].is_null() {
        return Err(s3_error!(
            NotImplemented,
            "copying into an encrypted multipart upload is not supported"
        ));
    }
    let (_, source) = gw
        .copy_source(
            req.credentials.as_ref(),
            &input.copy_source,
            conditions_of!(copy source of input),
        )
        .await?;
    let range = copy_range(input.copy_source_range.as_deref(), source.size as u64)?;
    let body = gw.0.storage.read(&source, range).await.map_err(s3_err)?;
    let md5 =
        gw.0.storage
            .put_part(&upload, input.part_number, body, |_| Ok(json!({})))
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

pub(super) async fn complete_multipart_upload(
    gw: &Gateway,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    let bucket = gw.bucket(&input.bucket).await?;
    let upload = match gw.0.storage.upload(&bucket, &input.upload_id).await {
        Ok(upload) => upload,
        Err(StorageError::NoSuchUpload) => {
            return completed_before(gw, bucket, &input.key, &input.upload_id).await
        }
        Err(e) => return Err(s3_err(e)),
    };
    let parts = input
        .multipart_upload
        .as_ref()
        .and_then(|m| m.parts.clone())
        .unwrap_or_default();
    let listed: Vec<(i32, String)> = parts
        .iter()
        .map(|p| {
            (
                p.part_number.unwrap_or(0),
                p.e_tag
                    .as_ref()
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
    let sums = Listed {
        parts: parts.iter().map(|p| sums_of!(p)).collect(),
        whole: sums_of!(input),
    };
    let upload = with_parts(gw, upload, &listed, &sums).await?;
    let condition = put_condition_of!(input);
    let row = match gw
        .0
        .storage
        .complete_upload(&upload, &listed, condition)
        .await
    {
        Ok(row) => row,
        // Completed meanwhile by another request.
        Err(StorageError::NoSuchUpload) => {
            return completed_before(gw, bucket, &input.key, &input.upload_id).await
        }
        Err(e) => return Err(s3_err(e)),
    };
    Ok(completed(bucket, row))
}

/// `upload` with what its object keeps of it: the upload's id (a repeated
/// Complete is answered from it) and the listed parts' sizes (a GET or
/// HEAD of one `partNumber` reads them). A part re-sent meanwhile has
/// another MD5, so the commit, which checks them, fails instead.
/// The checksums a Complete request sends: of each listed part, and of the
/// whole object.
struct Listed {
    parts: Vec<Sums>,
    whole: Sums,
}

/// The object's checksum from its parts', for an upload created with a
/// checksum algorithm; parts listed with a checksum must have been sent
/// with it, and a whole-object checksum sent must match (else BadDigest).
/// Returns the metadata entries the object keeps.
fn object_checksum(
    upload: &UploadRow,
    used: &[&mds_store::PartRow],
    listed: &[(i32, String)],
    sent: &Listed,
) -> S3Result<Option<Map<String, Value>>> {
    let Some(algorithm) = upload.metadata["checksum"]["algorithm"].as_str() else {
        return Ok(None);
    };
    let kind = upload.metadata["checksum"]["type"]
        .as_str()
        .unwrap_or(ChecksumType::COMPOSITE);
    fn stored<'a>(p: &'a mds_store::PartRow, algorithm: &str) -> Option<&'a str> {
        p.meta["checksums"][algorithm].as_str()
    }
    for ((number, _), sums) in listed.iter().zip(&sent.parts) {
        let Some(given) = sums.get(algorithm) else {
            continue;
        };
        let part = used.iter().find(|p| p.part_number == *number);
        if part.and_then(|p| stored(p, algorithm)) != Some(given) {
            return Err(s3_err(StorageError::InvalidPart(*number)));
        }
    }
    let sums: Vec<(Option<&str>, u64)> = used
        .iter()
        .map(|p| (stored(p, algorithm), p.size as u64))
        .collect();
    let whole = multipart_checksum(algorithm, kind == ChecksumType::FULL_OBJECT, &sums);
    if let Some(sent) = sent.whole.get(algorithm) {
        if whole.as_deref() != Some(sent) {
            return Err(s3_err(StorageError::BadDigest));
        }
    }
    let Some(whole) = whole else {
        return Ok(None);
    };
    let mut out = Map::new();
    out.insert("checksums".into(), json!({ algorithm: whole }));
    out.insert("checksum_type".into(), kind.into());
    out.insert(
        "part_checksums".into(),
        sums.iter().map(|(s, _)| Value::from(*s)).collect(),
    );
    Ok(Some(out))
}

async fn with_parts(
    gw: &Gateway,
    mut upload: UploadRow,
    listed: &[(i32, String)],
    sent: &Listed,
) -> S3Result<UploadRow> {
    let parts =
        gw.0.storage
            .store()
            .parts(&upload.id)
            .await
            .map_err(|e| s3_err(e.into()))?;
    let used: Vec<_> = listed
        .iter()
        .filter_map(|(number, _)| parts.iter().find(|p| p.part_number == *number))
        .collect();
    let sizes: Vec<i64> = used.iter().map(|p| p.size).collect();
    // An encrypted object keeps each part's IV, in order.
    let sse = match &upload.metadata["sse"] {
        Value::Null => None,
        record => {
            let metas: Vec<&Value> = used.iter().map(|p| &p.meta).collect();
            Some(sse::object_record(record, &metas)?)
        }
    };
    let checksum = object_checksum(&upload, &used, listed, sent)?;
    if let Some(metadata) = upload.metadata.as_object_mut() {
        metadata.insert(UPLOAD_ID.into(), upload.id.clone().into());
        metadata.insert("parts".into(), sizes.into());
        if let Some(sse) = sse {
            metadata.insert("sse".into(), sse);
        }
        metadata.extend(checksum.unwrap_or_default());
    }
    Ok(upload)
}

/// The metadata key naming the multipart upload an object came from.
pub(super) const UPLOAD_ID: &str = "upload_id";

/// S3 answers a Complete of an upload it completed already as it did the
/// first time; an upload never completed (or since overwritten) is gone.
async fn completed_before(
    gw: &Gateway,
    bucket: BucketRow,
    key: &str,
    upload_id: &str,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let no_such_upload = || s3_err(StorageError::NoSuchUpload);
    let row = match gw.0.storage.object(&bucket, key).await {
        Ok(row) => row,
        Err(StorageError::NoSuchKey) => return Err(no_such_upload()),
        Err(e) => return Err(s3_err(e)),
    };
    if row.metadata[UPLOAD_ID].as_str() != Some(upload_id) {
        return Err(no_such_upload());
    }
    Ok(completed(bucket, row))
}

fn completed(bucket: BucketRow, row: ObjectRow) -> S3Response<CompleteMultipartUploadOutput> {
    let sums = Sums::stored(&row);
    S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(bucket.name),
        key: Some(row.key),
        e_tag: Some(ETag::Strong(row.etag)),
        location: None,
        checksum_crc32: sums.crc32,
        checksum_crc32c: sums.crc32c,
        checksum_crc64nvme: sums.crc64nvme,
        checksum_sha1: sums.sha1,
        checksum_sha256: sums.sha256,
        checksum_type: sums.kind.map(ChecksumType::from),
        ..Default::default()
    })
}

pub(super) async fn abort_multipart_upload(
    gw: &Gateway,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let (_, upload) = upload(gw, &req.input.bucket, &req.input.upload_id).await?;
    gw.0.storage.abort_upload(&upload).await.map_err(s3_err)?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(super) async fn list_parts(
    gw: &Gateway,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    let (bucket, upload) = upload(gw, &input.bucket, &input.upload_id).await?;
    let parts =
        gw.0.storage
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

pub(super) async fn list_multipart_uploads(
    gw: &Gateway,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    let bucket = gw.bucket(&input.bucket).await?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let uploads =
        gw.0.storage
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
