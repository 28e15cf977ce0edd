//! Server-side encryption of an object's bytes on PutObject and multipart
//! uploads, undone on GetObject and HeadObject: SSE-C (AES-256 with the key
//! the client sends with every write and read) and SSE-S3 (AES-256 with a
//! key derived from the master key).
//!
//! Bytes are encrypted before they are chunked, so the content-addressed
//! chunks of an encrypted object hold ciphertext under a random IV: they
//! never share a chunk with a plaintext copy of the same bytes, nor with
//! another encrypted copy. AES-256-CTR keeps sizes and lets a range be read
//! from its offset; the chunks' BLAKE3 addresses already detect tampering.
//! Each multipart part has its own IV (kept with the part, then in the
//! object's record, one per part). An SSE-C key is never stored: the object
//! keeps a salted keyed hash of it, which a read's key must match.
//!
//! Copies of or into encrypted objects and SSE-KMS are refused with 501
//! (`access.rs`, here).

use aes::Aes256;
use base64::Engine as _;
use bytes::Bytes;
use ctr::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use mds_store::ObjectRow;
use s3s::dto::{SSECustomerAlgorithm, ServerSideEncryption};
use s3s::{s3_error, S3Result};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

type Cipher = ctr::Ctr128BE<Aes256>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The SSE-C key a request sends (`x-amz-server-side-encryption-customer-*`).
pub(super) struct CustomerKey {
    key: Zeroizing<[u8; 32]>,
    /// Base64 of the key's MD5, as sent (and echoed).
    md5: String,
}

/// The `x-amz-server-side-encryption-customer-*` fields of a request
/// (PutObject, GetObject and HeadObject share them by name, not a type).
macro_rules! customer_key_of {
    ($input:ident) => {
        $crate::s3::sse::CustomerKey::from_request(
            $input.sse_customer_algorithm.as_ref(),
            $input.sse_customer_key.as_deref(),
            $input.sse_customer_key_md5.as_deref(),
        )
    };
}
pub(super) use customer_key_of;

impl CustomerKey {
    /// The key a request sends, checked as S3 checks it: AES256, 32 bytes,
    /// and the MD5 the client computed of it.
    pub(super) fn from_request(
        algorithm: Option<&SSECustomerAlgorithm>,
        key: Option<&str>,
        key_md5: Option<&str>,
    ) -> S3Result<Option<Self>> {
        if algorithm.is_none() && key.is_none() && key_md5.is_none() {
            return Ok(None);
        }
        let (Some(algorithm), Some(key)) = (algorithm, key) else {
            return Err(s3_error!(
                InvalidArgument,
                "Requests specifying Server Side Encryption with Customer provided keys must \
                 provide both the algorithm and the key"
            ));
        };
        if algorithm.as_str() != "AES256" {
            return Err(s3_error!(
                InvalidEncryptionAlgorithmError,
                "The encryption request you specified is not valid. The valid value is AES256."
            ));
        }
        let bytes = Zeroizing::new(B64.decode(key.trim()).unwrap_or_default());
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            s3_error!(
                InvalidArgument,
                "The secret key was invalid for the specified algorithm."
            )
        })?;
        let key = Zeroizing::new(key);
        let md5 = B64.encode(Md5::digest(key.as_slice()));
        if key_md5.map(str::trim) != Some(md5.as_str()) {
            return Err(s3_error!(
                InvalidArgument,
                "The calculated MD5 hash of the key did not match the hash that was provided."
            ));
        }
        Ok(Some(Self { key, md5 }))
    }
}

/// How a new object is to be sealed, and with what.
pub(super) struct Seal {
    key: Zeroizing<[u8; 32]>,
    iv: [u8; 16],
    /// What the object keeps (under "sse" in its metadata).
    record: Value,
    /// The MD5 of the plaintext, as it passes (Content-MD5 is of it).
    plain_md5: Arc<Mutex<Md5>>,
}

/// What a read of an object reports about its encryption.
#[derive(Default)]
pub(super) struct Reported {
    pub server_side_encryption: Option<ServerSideEncryption>,
    pub sse_customer_algorithm: Option<SSECustomerAlgorithm>,
    pub sse_customer_key_md5: Option<String>,
}

impl Seal {
    /// The seal a PutObject asks for with `customer` (SSE-C) or
    /// `server_side` (SSE-S3); `None` when it asks for neither.
    pub(super) fn for_put(
        sse_root: &[u8; 32],
        customer: Option<CustomerKey>,
        server_side: Option<&ServerSideEncryption>,
    ) -> S3Result<Option<Self>> {
        let iv: [u8; 16] = rand::random();
        let record_iv = B64.encode(iv);
        match (customer, server_side.map(|s| s.as_str())) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(s3_error!(
                InvalidArgument,
                "Server Side Encryption with Customer provided key is incompatible with the \
                 encryption method specified"
            )),
            (Some(customer), None) => {
                let salt: [u8; 32] = rand::random();
                Ok(Some(Self {
                    record: json!({
                        "kind": "SSE-C",
                        "iv": record_iv,
                        "salt": hex::encode(salt),
                        "check": hex::encode(key_check(&salt, &customer.key)),
                    }),
                    key: customer.key,
                    iv,
                    plain_md5: Default::default(),
                }))
            }
            (None, Some("AES256")) => Ok(Some(Self {
                key: server_key(sse_root, &iv),
                iv,
                record: json!({"kind": "AES256", "iv": record_iv}),
                plain_md5: Default::default(),
            })),
            (None, Some(other)) => Err(s3_error!(
                NotImplemented,
                "server-side encryption {other:?} is not supported; use AES256 (SSE-S3) or SSE-C"
            )),
        }
    }

    /// `body` encrypted, its plaintext MD5 taken on the way.
    pub(super) fn encrypt<S>(&self, body: S) -> BoxStream<'static, std::io::Result<Bytes>>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let mut cipher = Cipher::new(self.key.as_ref().into(), &self.iv.into());
        let md5 = self.plain_md5.clone();
        body.map(move |piece| {
            let piece = piece?;
            md5.lock().expect("md5 lock").update(&piece);
            let mut buf = piece.to_vec();
            cipher.apply_keystream(&mut buf);
            Ok(Bytes::from(buf))
        })
        .boxed()
    }

    /// The plaintext's MD5, once the body has passed.
    pub(super) fn plain_md5(&self) -> [u8; 16] {
        std::mem::take(&mut *self.plain_md5.lock().expect("md5 lock"))
            .finalize()
            .into()
    }

    /// What the object (or part) keeps of its encryption.
    pub(super) fn record(&self) -> Value {
        self.record.clone()
    }

    /// What the PutObject answer says of the encryption.
    pub(super) fn reported(&self, customer_md5: Option<String>) -> Reported {
        report(&self.record, customer_md5)
    }
}

/// What an answer says of the encryption `record` describes (none: no
/// encryption), with the SSE-C key MD5 the request sent.
pub(super) fn reported(record: Option<&Value>, customer_md5: Option<String>) -> Reported {
    record.map_or_else(Reported::default, |r| report(r, customer_md5))
}

fn report(record: &Value, customer_md5: Option<String>) -> Reported {
    match record["kind"].as_str() {
        Some("SSE-C") => Reported {
            sse_customer_algorithm: Some("AES256".to_string()),
            sse_customer_key_md5: customer_md5,
            ..Default::default()
        },
        Some(_) => Reported {
            server_side_encryption: Some(ServerSideEncryption::from_static(
                ServerSideEncryption::AES256,
            )),
            ..Default::default()
        },
        None => Reported::default(),
    }
}

/// The key an SSE-S3 object is sealed with: the server's SSE root keyed
/// with the object's IV, so each object has its own.
fn server_key(sse_root: &[u8; 32], iv: &[u8; 16]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(*blake3::keyed_hash(sse_root, iv).as_bytes())
}

/// A salted, keyed one-way value of an SSE-C key: what a read's key must
/// match. It reveals nothing of the key.
fn key_check(salt: &[u8; 32], key: &[u8; 32]) -> [u8; 32] {
    *blake3::keyed_hash(salt, key).as_bytes()
}

/// The record a multipart upload keeps of the encryption its parts get
/// (as an object's, without IVs: each part draws its own).
pub(super) fn upload_record(
    sse_root: &[u8; 32],
    customer: Option<CustomerKey>,
    server_side: Option<&ServerSideEncryption>,
) -> S3Result<Option<Value>> {
    Ok(Seal::for_put(sse_root, customer, server_side)?.map(|seal| {
        let mut record = seal.record;
        if let Some(r) = record.as_object_mut() {
            r.remove("iv");
        }
        record
    }))
}

/// The seal of one part of an upload whose record is `upload` (null when
/// the upload is not encrypted), with the key the request sends: an SSE-C
/// upload's parts need its key, and a plain upload takes none.
pub(super) fn seal_part(
    sse_root: &[u8; 32],
    upload: &Value,
    customer: Option<CustomerKey>,
) -> S3Result<Option<Seal>> {
    let iv: [u8; 16] = rand::random();
    let key = match (upload["kind"].as_str(), customer) {
        (None, None) => return Ok(None),
        (Some("SSE-C"), Some(customer)) => {
            // A part under another key is a bad request (S3's 400), not a
            // read refused.
            check_customer_key(upload, &customer).map_err(|e| match e.code() {
                s3s::S3ErrorCode::AccessDenied => s3_error!(
                    InvalidRequest,
                    "The provided encryption parameters did not match the ones used originally."
                ),
                _ => e,
            })?;
            customer.key
        }
        (Some("SSE-C"), None) => return Err(key_needed()),
        (_, Some(_)) => return Err(not_applicable()),
        (Some(_), None) => server_key(sse_root, &iv),
    };
    let mut record = upload.clone();
    if let Some(r) = record.as_object_mut() {
        r.insert("iv".into(), B64.encode(iv).into());
    }
    Ok(Some(Seal {
        key,
        iv,
        record,
        plain_md5: Default::default(),
    }))
}

fn key_needed() -> s3s::S3Error {
    s3_error!(
        InvalidRequest,
        "The object was stored using a form of Server Side Encryption. The correct \
         parameters must be provided to retrieve the object."
    )
}

fn not_applicable() -> s3s::S3Error {
    s3_error!(
        InvalidRequest,
        "The encryption parameters are not applicable to this object."
    )
}

fn damaged() -> s3s::S3Error {
    s3_error!(InternalError, "the object's encryption record is damaged")
}

/// Checks an SSE-C key against the salted hash a record keeps.
fn check_customer_key(record: &Value, customer: &CustomerKey) -> S3Result<()> {
    let salt: [u8; 32] = record["salt"]
        .as_str()
        .and_then(|s| hex::decode(s).ok())
        .and_then(|s| s.try_into().ok())
        .ok_or_else(damaged)?;
    let want = record["check"].as_str().unwrap_or_default();
    if hex::encode(key_check(&salt, &customer.key)) != want {
        return Err(s3_error!(
            AccessDenied,
            "The provided encryption key does not match the object's key."
        ));
    }
    Ok(())
}

fn decode_iv(value: &Value) -> S3Result<[u8; 16]> {
    value
        .as_str()
        .and_then(|iv| B64.decode(iv).ok())
        .and_then(|iv| iv.try_into().ok())
        .ok_or_else(damaged)
}

/// A multipart object's record: the upload's, with each listed part's IV
/// (`parts` holds the parts' own records, in order).
pub(super) fn object_record(upload: &Value, parts: &[&Value]) -> S3Result<Value> {
    let ivs = parts
        .iter()
        .map(|p| decode_iv(&p["iv"]).map(|iv| Value::from(B64.encode(iv))))
        .collect::<S3Result<Vec<_>>>()?;
    let mut record = upload.clone();
    if let Some(r) = record.as_object_mut() {
        r.insert("ivs".into(), ivs.into());
    }
    Ok(record)
}

/// One stretch of an object encrypted with one key and IV: the whole
/// object, or one part of a multipart one.
struct Segment {
    start: u64,
    end: u64,
    key: Zeroizing<[u8; 32]>,
    iv: [u8; 16],
}

/// How to read an encrypted object.
pub(super) struct Opened {
    segments: Vec<Segment>,
    pub reported: Reported,
}

/// Checks a read of `row` against the key it sends (`customer`): an
/// SSE-C object needs its key, anything else refuses one. `Some` when the
/// bytes must be decrypted.
pub(super) fn open(
    sse_root: &[u8; 32],
    row: &ObjectRow,
    customer: Option<CustomerKey>,
) -> S3Result<Option<Opened>> {
    let record = &row.metadata["sse"];
    let customer_md5 = match (record["kind"].as_str(), customer) {
        (None, None) => return Ok(None),
        (Some("SSE-C"), Some(customer)) => {
            check_customer_key(record, &customer)?;
            Some(customer)
        }
        (Some("SSE-C"), None) => return Err(key_needed()),
        (_, Some(_)) => return Err(not_applicable()),
        (Some(_), None) => None,
    };
    // (IV, size) of each stretch: one for a PutObject, one per part.
    let stretches: Vec<([u8; 16], u64)> = match record["ivs"].as_array() {
        Some(ivs) => {
            let sizes = row.metadata["parts"].as_array().ok_or_else(damaged)?;
            if sizes.len() != ivs.len() {
                return Err(damaged());
            }
            ivs.iter()
                .zip(sizes)
                .map(|(iv, size)| Ok((decode_iv(iv)?, size.as_u64().ok_or_else(damaged)?)))
                .collect::<S3Result<_>>()?
        }
        None => vec![(decode_iv(&record["iv"])?, row.size as u64)],
    };
    let mut segments = Vec::with_capacity(stretches.len());
    let mut start = 0;
    for (iv, size) in stretches {
        let key = match &customer_md5 {
            Some(customer) => customer.key.clone(),
            None => server_key(sse_root, &iv),
        };
        segments.push(Segment {
            start,
            end: start + size,
            key,
            iv,
        });
        start += size;
    }
    Ok(Some(Opened {
        segments,
        reported: report(record, customer_md5.map(|c| c.md5)),
    }))
}

impl Opened {
    /// `body`, the ciphertext from byte `offset` on, decrypted stretch by
    /// stretch.
    pub(super) fn decrypt(self, body: crate::ObjectStream, offset: u64) -> crate::ObjectStream {
        let segments = self.segments;
        let mut at = offset;
        body.map(move |piece| {
            let mut buf = piece?.to_vec();
            let mut done = 0;
            while done < buf.len() {
                let segment = segments
                    .iter()
                    .find(|s| s.start <= at && at < s.end)
                    .ok_or_else(|| {
                        std::io::Error::other("bytes past the encrypted object's end")
                    })?;
                let n = (buf.len() - done).min((segment.end - at) as usize);
                let mut cipher = Cipher::new(segment.key.as_ref().into(), &segment.iv.into());
                cipher.seek(at - segment.start);
                cipher.apply_keystream(&mut buf[done..done + n]);
                done += n;
                at += n as u64;
            }
            Ok(Bytes::from(buf))
        })
        .boxed()
    }
}

/// Whether `row`'s bytes are encrypted (a copy would need its key).
pub fn is_sealed(row: &ObjectRow) -> bool {
    !row.metadata["sse"].is_null()
}
