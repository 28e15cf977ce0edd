//! Between s3s's types and the storage layer: storage errors as S3 errors,
//! an object's stored metadata to and from S3 headers, conditional
//! requests, and the body stream s3s takes.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mds_store::ObjectRow;
use s3s::dto::{ETagCondition, Metadata, Owner, Timestamp, TimestampFormat};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};
use serde_json::{json, Map, Value};

use crate::{KeyProblem, StorageError};

/// The S3 error for a storage failure.
pub(super) fn s3_err(e: StorageError) -> S3Error {
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
        StorageError::Store(mds_store::StoreError::Storage(
            mds_store::StorageRule::PreconditionFailed,
        )) => {
            return s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            )
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

pub(super) fn timestamp(at: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp::from(SystemTime::from(at))
}

pub(super) fn owner() -> Owner {
    Owner {
        display_name: Some("mds".to_string()),
        id: Some("mds".to_string()),
    }
}

/// The Content-Type an object gets when the request names none.
pub(super) fn content_type(given: Option<&String>) -> String {
    given
        .cloned()
        .unwrap_or_else(|| "binary/octet-stream".to_string())
}

/// The stored metadata of an object: user metadata, standard headers,
/// checksums.
pub(super) fn metadata_json(
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
        let value = match (name, value) {
            ("content-encoding", Some(v)) => without_aws_chunked(v),
            (_, v) => v.cloned(),
        };
        if let Some(value) = value {
            standard.insert(name.to_string(), Value::String(value));
        }
    }
    json!({
        "user": user.cloned().unwrap_or_default(),
        "headers": standard,
        "checksums": checksums,
    })
}

/// A Content-Encoding without `aws-chunked`, which names how the request
/// body was sent, not what the object is; `None` if nothing else is left.
fn without_aws_chunked(value: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

/// [`metadata_json`] of a request that sets an object's headers. PutObject,
/// CopyObject and CreateMultipartUpload share these fields by name, not by
/// a type, so the list of stored headers is written once here.
macro_rules! metadata_of {
    ($input:ident, $checksums:expr) => {
        $crate::s3::wire::metadata_json(
            $input.metadata.as_ref(),
            [
                ("cache-control", $input.cache_control.as_ref()),
                ("content-disposition", $input.content_disposition.as_ref()),
                ("content-encoding", $input.content_encoding.as_ref()),
                ("content-language", $input.content_language.as_ref()),
            ],
            $input.expires.as_ref(),
            $checksums,
        )
    };
}
pub(super) use metadata_of;

pub(super) fn user_metadata(row: &ObjectRow) -> Option<Metadata> {
    let map = row.metadata["user"].as_object()?;
    let meta: Metadata = map
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    (!meta.is_empty()).then_some(meta)
}

pub(super) fn standard_header(row: &ObjectRow, name: &str) -> Option<String> {
    row.metadata["headers"][name].as_str().map(str::to_string)
}

pub(super) fn expires(row: &ObjectRow) -> Option<Timestamp> {
    let text = row.metadata["headers"]["expires"].as_str()?;
    Timestamp::parse(TimestampFormat::HttpDate, text).ok()
}

pub(super) fn strip_quotes(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

fn etag_matches(condition: &ETagCondition, etag: &str) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(tag) => strip_quotes(tag.value()) == etag,
    }
}

/// The If-Match / If-None-Match of a write (PutObject and
/// CompleteMultipartUpload share the fields by name, not by a type), for
/// the store to check as it commits.
macro_rules! put_condition_of {
    ($input:ident) => {
        mds_store::PutCondition {
            if_match: $input.if_match.as_ref().map($crate::s3::wire::etag_or_any),
            if_none_match: $input
                .if_none_match
                .as_ref()
                .map($crate::s3::wire::etag_or_any),
        }
    };
}
pub(super) use put_condition_of;

/// An ETag condition as the store takes it: the ETag unquoted, or `*`.
pub(super) fn etag_or_any(condition: &ETagCondition) -> &str {
    match condition {
        ETagCondition::Any => "*",
        ETagCondition::ETag(tag) => strip_quotes(tag.value()),
    }
}

/// The conditions of a request: If-Match, If-None-Match and
/// If-(Un)Modified-Since, or their x-amz-copy-source-if-* forms.
#[derive(Clone, Copy)]
pub(super) struct Conditions<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
    pub if_unmodified_since: Option<&'a Timestamp>,
}

/// The [`Conditions`] of a request. GetObject and HeadObject share these
/// fields by name, as CopyObject and UploadPartCopy share their
/// x-amz-copy-source-if-* forms, but not by a type.
macro_rules! conditions_of {
    ($input:ident) => {
        $crate::s3::wire::Conditions {
            if_match: $input.if_match.as_ref(),
            if_none_match: $input.if_none_match.as_ref(),
            if_modified_since: $input.if_modified_since.as_ref(),
            if_unmodified_since: $input.if_unmodified_since.as_ref(),
        }
    };
    (copy source of $input:ident) => {
        $crate::s3::wire::Conditions {
            if_match: $input.copy_source_if_match.as_ref(),
            if_none_match: $input.copy_source_if_none_match.as_ref(),
            if_modified_since: $input.copy_source_if_modified_since.as_ref(),
            if_unmodified_since: $input.copy_source_if_unmodified_since.as_ref(),
        }
    };
}
pub(super) use conditions_of;

impl Conditions<'_> {
    /// Checks `row` against the conditions, as S3 orders them.
    pub(super) fn check(&self, row: &ObjectRow) -> S3Result<()> {
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
        if let Some(condition) = self.if_match {
            if !etag_matches(condition, &row.etag) {
                return Err(s3_error!(PreconditionFailed));
            }
        } else if let Some(since) = self.if_unmodified_since.and_then(to_system) {
            if seconds(modified) > seconds(since) {
                return Err(s3_error!(PreconditionFailed));
            }
        }
        let unchanged = match self.if_none_match {
            Some(condition) => etag_matches(condition, &row.etag),
            None => self
                .if_modified_since
                .and_then(to_system)
                .is_some_and(|since| seconds(modified) <= seconds(since)),
        };
        if unchanged {
            return Err(not_modified(row));
        }
        Ok(())
    }
}

/// A 304 names the object it stands for, as S3's does: its ETag and
/// Last-Modified, which a cache revalidates against.
fn not_modified(row: &ObjectRow) -> S3Error {
    let mut err = s3_error!(NotModified, "Not Modified");
    let mut headers = http::HeaderMap::new();
    if let Ok(etag) = http::HeaderValue::from_str(&format!("\"{}\"", row.etag)) {
        headers.insert(http::header::ETAG, etag);
    }
    let at = row
        .last_modified
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(at) = http::HeaderValue::from_str(&at) {
        headers.insert(http::header::LAST_MODIFIED, at);
    }
    err.set_headers(headers);
    err
}

/// s3s wants a `Sync` body stream; ours is `Send` only, so it is polled
/// through a mutex that is never contended.
pub(super) struct SyncStream(std::sync::Mutex<crate::ObjectStream>);

impl SyncStream {
    pub(super) fn new(inner: crate::ObjectStream) -> Self {
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
