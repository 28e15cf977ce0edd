//! What a request body must match before it is committed: its Content-MD5
//! and the x-amz-checksum-* values the client sent (in headers or an
//! aws-chunked trailer). The computed checksums are stored and echoed.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mds_store::ObjectRow;
use s3s::checksum::ChecksumHasher;
use s3s::dto::{ChecksumAlgorithm, ChecksumType, StreamingBlob};
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

/// An object's checksums, one field per S3 header (`None`: not asked for),
/// and their type (COMPOSITE or FULL_OBJECT) where an answer names it.
#[derive(Debug, Default)]
pub(super) struct Sums {
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub crc64nvme: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    pub kind: Option<String>,
}

/// [`Sums`] from the `checksum_*` fields a request or a listed part carries
/// (shared by name, not by a type).
macro_rules! sums_of {
    ($x:expr) => {
        $crate::s3::checksums::Sums {
            crc32: $x.checksum_crc32.clone(),
            crc32c: $x.checksum_crc32c.clone(),
            crc64nvme: $x.checksum_crc64nvme.clone(),
            sha1: $x.checksum_sha1.clone(),
            sha256: $x.checksum_sha256.clone(),
            kind: None,
        }
    };
}
pub(super) use sums_of;

impl Sums {
    /// From their stored form, `{"crc32": "base64", ..}`.
    pub(super) fn from_json(stored: &Map<String, Value>) -> Self {
        Self::by_name(|name| stored.get(name).and_then(Value::as_str))
    }

    /// The checksums stored with an object, with their type: a multipart
    /// object's is kept, an object sent whole has FULL_OBJECT ones.
    pub(super) fn stored(row: &ObjectRow) -> Self {
        let mut sums = Self::by_name(|name| row.metadata["checksums"][name].as_str());
        if sums.get_any() {
            sums.kind = Some(
                row.metadata["checksum_type"]
                    .as_str()
                    .unwrap_or(ChecksumType::FULL_OBJECT)
                    .to_string(),
            );
        }
        sums
    }

    /// Part `n`'s checksum (1-based) of a multipart object whose parts'
    /// checksums were kept.
    pub(super) fn of_part(row: &ObjectRow, n: i32) -> Self {
        let algorithm = row.metadata["checksum"]["algorithm"].as_str();
        let index = usize::try_from(n - 1).ok();
        let sum = index.and_then(|i| row.metadata["part_checksums"][i].as_str());
        let mut sums = Self::by_name(|name| sum.filter(|_| Some(name) == algorithm));
        if sums.get_any() {
            sums.kind = row.metadata["checksum_type"].as_str().map(str::to_string);
        }
        sums
    }

    /// The checksum of algorithm `name` (as in [`CHECKSUMS`]).
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        match name {
            "crc32" => self.crc32.as_deref(),
            "crc32c" => self.crc32c.as_deref(),
            "crc64nvme" => self.crc64nvme.as_deref(),
            "sha1" => self.sha1.as_deref(),
            "sha256" => self.sha256.as_deref(),
            _ => None,
        }
    }

    pub(super) fn get_any(&self) -> bool {
        CHECKSUMS.iter().any(|name| self.get(name).is_some())
    }

    fn by_name<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        let get = |name: &str| get(name).map(str::to_string);
        Self {
            crc32: get("crc32"),
            crc32c: get("crc32c"),
            crc64nvme: get("crc64nvme"),
            sha1: get("sha1"),
            sha256: get("sha256"),
            kind: None,
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

/// The checksum of a multipart object from its parts' (base64 checksum,
/// size), as S3 computes it for `algorithm` (a name in [`CHECKSUMS`]):
/// COMPOSITE is the checksum of the parts' raw checksums, then `-N`;
/// FULL_OBJECT (CRCs only) is the CRC of the whole object, combined from
/// the parts' CRCs without reading the bytes again. `None` if a part has
/// no checksum of that algorithm or the type does not apply.
pub(super) fn multipart_checksum(
    algorithm: &str,
    full_object: bool,
    parts: &[(Option<&str>, u64)],
) -> Option<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw: Vec<Vec<u8>> = parts
        .iter()
        .map(|(sum, _)| b64.decode((*sum)?).ok())
        .collect::<Option<_>>()?;
    if !full_object {
        let mut hasher = ChecksumHasher::default();
        match algorithm {
            "crc32" => hasher.crc32 = Some(Default::default()),
            "crc32c" => hasher.crc32c = Some(Default::default()),
            "sha1" => hasher.sha1 = Some(Default::default()),
            "sha256" => hasher.sha256 = Some(Default::default()),
            _ => return None,
        }
        for sum in &raw {
            hasher.update(sum);
        }
        let all = hasher.finalize();
        let sum = match algorithm {
            "crc32" => all.checksum_crc32,
            "crc32c" => all.checksum_crc32c,
            "sha1" => all.checksum_sha1,
            _ => all.checksum_sha256,
        }?;
        return Some(format!("{sum}-{}", parts.len()));
    }
    // Reflected polynomials of the CRCs S3 offers whole-object.
    let (poly, width) = match algorithm {
        "crc32" => (0xEDB8_8320, 32),
        "crc32c" => (0x82F6_3B78, 32),
        "crc64nvme" => (0x9A6C_9329_AC4B_C9B5, 64),
        _ => return None,
    };
    let mut crc: Option<u64> = None;
    for (sum, (_, size)) in raw.iter().zip(parts) {
        let value = sum.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b));
        if sum.len() * 8 != width {
            return None;
        }
        crc = Some(match crc {
            None => value,
            Some(before) => crc_combine(before, value, *size, poly, width),
        });
    }
    let crc = crc?;
    let bytes = crc.to_be_bytes();
    Some(b64.encode(&bytes[8 - width / 8..]))
}

/// The CRC of A then B from crc(A), crc(B) and len(B) in bytes, for a
/// reflected CRC with all-ones init and xorout (zlib's crc32_combine, for
/// any width up to 64): crc(A) is carried over len(B) zero bytes by
/// repeated squaring of the one-zero-bit operator over GF(2).
fn crc_combine(crc1: u64, crc2: u64, len2: u64, poly: u64, width: usize) -> u64 {
    fn times(matrix: &[u64], mut vector: u64) -> u64 {
        let mut sum = 0;
        let mut i = 0;
        while vector != 0 {
            if vector & 1 != 0 {
                sum ^= matrix[i];
            }
            vector >>= 1;
            i += 1;
        }
        sum
    }
    fn square(matrix: &[u64]) -> Vec<u64> {
        matrix.iter().map(|&row| times(matrix, row)).collect()
    }
    if len2 == 0 {
        return crc1;
    }
    // The operator for one zero bit, then two, then four.
    let mut odd = vec![0u64; width];
    odd[0] = poly;
    for (n, row) in odd.iter_mut().enumerate().skip(1) {
        *row = 1 << (n - 1);
    }
    let mut even = square(&odd);
    odd = square(&even);
    let mut crc1 = crc1;
    let mut len2 = len2;
    loop {
        // One zero byte (eight bits) first, then doubling.
        even = square(&odd);
        if len2 & 1 != 0 {
            crc1 = times(&even, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
        odd = square(&even);
        if len2 & 1 != 0 {
            crc1 = times(&odd, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
    }
    crc1 ^ crc2
}

#[cfg(test)]
mod tests {
    use super::multipart_checksum;

    const PART: u64 = 5 * 1024 * 1024;

    /// Three 5 MiB parts of 'A', 'B' and 'C', with the values the upstream
    /// ceph/s3-tests expect (computed by S3 and RGW).
    fn three(sums: [&str; 3]) -> Vec<(Option<&str>, u64)> {
        sums.iter().map(|s| (Some(*s), PART)).collect()
    }

    #[test]
    fn full_object_crcs_combine_as_s3_computes_them() {
        let crc32 = three(["JRTCyQ==", "QoZTGg==", "YAgjqw=="]);
        assert_eq!(
            multipart_checksum("crc32", true, &crc32).as_deref(),
            Some("WgDhBQ==")
        );
        let crc32c = three(["MDaLrw==", "TH4EZg==", "Z7mBIQ=="]);
        assert_eq!(
            multipart_checksum("crc32c", true, &crc32c).as_deref(),
            Some("xU+Krw==")
        );
        let crc64 = three(["L/E4WYn8v98=", "xW1l19VobYM=", "cK5MnNaWrW4="]);
        assert_eq!(
            multipart_checksum("crc64nvme", true, &crc64).as_deref(),
            Some("i+6LR0y3eFo=")
        );
    }

    #[test]
    fn composites_hash_the_parts_checksums() {
        let sha256 = three([
            "275VF5loJr1YYawit0XSHREhkFXYkkPKGuoK0x9VKxI=",
            "mrHwOfjTL5Zwfj74F05HOQGLdUb7E5szdCbxgUSq6NM=",
            "Vw7oB/nKQ5xWb3hNgbyfkvDiivl+U+/Dft48nfJfDow=",
        ]);
        assert_eq!(
            multipart_checksum("sha256", false, &sha256).as_deref(),
            Some("uWBwpe1dxI4Vw8Gf0X9ynOdw/SS6VBzfWm9giiv1sf4=-3")
        );
        let sha1 = three([
            "iIaTCGbm+vdVjNqIMF2S0T7ibMk=",
            "LS/TJ32bAVKEwRu+sE3X7awh/lk=",
            "6DDwovUaHwrKNXDMzOGbuvj9kxI=",
        ]);
        assert_eq!(
            multipart_checksum("sha1", false, &sha1).as_deref(),
            Some("sizjvY4eud3MrcHdZM3cQ/ol39o=-3")
        );
        assert_eq!(multipart_checksum("sha256", false, &[(None, PART)]), None);
        assert_eq!(multipart_checksum("sha256", true, &sha256), None);
    }
}
