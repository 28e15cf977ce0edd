//! What a request body must match before it is committed: its Content-MD5
//! and the x-amz-checksum-* values the client sent (in headers or an
//! aws-chunked trailer). The computed checksums are stored and echoed.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mds_store::ObjectRow;
use s3s::checksum::ChecksumHasher;
use s3s::dto::{ChecksumAlgorithm, StreamingBlob};
use s3s::{s3_error, S3Result, TrailingHeaders};
use serde_json::{Map, Value};

use crate::StorageError;

/// The checksum algorithms a request asks for, by header or trailer name.
const CHECKSUMS: [&str; 5] = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

/// Hashes the body with every checksum the client named, so the values it
/// sent can be checked before the commit, then stored and echoed.
pub(super) struct Checksums {
    md5: Option<[u8; 16]>,
    hasher: Arc<Mutex<ChecksumHasher>>,
    wanted: Vec<(&'static str, Option<String>)>,
    trailers: Option<TrailingHeaders>,
}

impl Checksums {
    /// What the request asks to be checked; a malformed Content-MD5 is
    /// refused here, before the body is read.
    pub(super) fn new(
        headers: &http::HeaderMap,
        trailers: Option<TrailingHeaders>,
        content_md5: Option<&str>,
        algorithm: Option<&ChecksumAlgorithm>,
    ) -> S3Result<Self> {
        let md5 = md5_check(sent_md5(headers, content_md5))?;
        let trailer = headers
            .get("x-amz-trailer")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let algorithm = algorithm.map(|a| a.as_str().to_ascii_lowercase());
        let mut hasher = ChecksumHasher::default();
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
        Ok(Self {
            md5,
            hasher: Arc::new(Mutex::new(hasher)),
            wanted,
            trailers,
        })
    }

    /// `body` (none: empty), hashed as it passes.
    pub(super) fn wrap(
        &self,
        body: Option<StreamingBlob>,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin + Send + 'static {
        let body = body.unwrap_or_else(|| StreamingBlob::from(s3s::Body::empty()));
        let hasher = (!self.wanted.is_empty()).then(|| self.hasher.clone());
        body.map(move |piece| {
            let piece = piece.map_err(|e| std::io::Error::other(e.to_string()))?;
            if let Some(hasher) = &hasher {
                hasher.lock().expect("hasher lock").update(&piece);
            }
            Ok(piece)
        })
    }

    /// Checks the body's `md5` and the sent checksums (trailers read now,
    /// after the body) and returns the computed ones, as stored.
    pub(super) fn finish(&self, md5: [u8; 16]) -> Result<Map<String, Value>, StorageError> {
        if self.md5.is_some_and(|want| want != md5) {
            return Err(StorageError::BadDigest);
        }
        let trailing = self.trailers.as_ref().and_then(|t| t.take());
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

/// The Content-MD5 a request sent; a header sent empty counts (and is
/// then refused as invalid) even where the parsed input dropped it.
fn sent_md5<'a>(headers: &'a http::HeaderMap, parsed: Option<&'a str>) -> Option<&'a str> {
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

/// An object's checksums, one field per S3 header (`None`: not asked for).
#[derive(Debug, Default)]
pub(super) struct Sums {
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub crc64nvme: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
}

impl Sums {
    /// From their stored form, `{"crc32": "base64", ..}`.
    pub(super) fn from_json(stored: &Map<String, Value>) -> Self {
        Self::by_name(|name| stored.get(name).and_then(Value::as_str))
    }

    /// The checksums stored with an object.
    pub(super) fn stored(row: &ObjectRow) -> Self {
        Self::by_name(|name| row.metadata["checksums"][name].as_str())
    }

    fn by_name<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        let get = |name: &str| get(name).map(str::to_string);
        Self {
            crc32: get("crc32"),
            crc32c: get("crc32c"),
            crc64nvme: get("crc64nvme"),
            sha1: get("sha1"),
            sha256: get("sha256"),
        }
    }

    /// These if `whole`, else none: a range has no checksums of its own.
    pub(super) fn only_if(self, whole: bool) -> Self {
        if whole {
            self
        } else {
            Self::default()
        }
    }
}
