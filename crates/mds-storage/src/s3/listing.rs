//! Listing objects: ListObjects v1 and v2 and ListObjectVersions over one
//! walk of the index that folds keys into common prefixes at a delimiter
//! and resumes after a marker, start-after or continuation token.

use mds_store::ObjectRow;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::wire::{owner, s3_err, timestamp};
use super::Gateway;
use crate::BucketRow;

/// One page of a listing.
#[derive(Default)]
struct Listing {
    objects: Vec<ObjectRow>,
    prefixes: Vec<String>,
    truncated: bool,
    /// The last entry listed: the next page's marker.
    last: Option<String>,
}

impl Listing {
    fn len(&self) -> usize {
        self.objects.len() + self.prefixes.len()
    }
}

impl Gateway {
    /// Objects and common prefixes after `after`, up to `max_keys` in all,
    /// in key order; also whether more remain and the last entry returned
    /// (the next marker).
    async fn list(
        &self,
        bucket: &BucketRow,
        prefix: &str,
        delimiter: Option<&str>,
        after: &str,
        max_keys: usize,
    ) -> S3Result<Listing> {
        const BATCH: i64 = 1000;
        let mut listing = Listing::default();
        if max_keys == 0 {
            // Nothing is asked for, so nothing is left over either.
            return Ok(listing);
        }
        let store = self.0.storage.store();
        let mut cursor = after.to_string();
        loop {
            let batch = store
                .list_objects(&bucket.id, prefix, &cursor, BATCH)
                .await
                .map_err(|e| s3_err(e.into()))?;
            let full = batch.len() as i64 == BATCH;
            let mut jumped = false;
            for row in batch {
                let common = delimiter.and_then(|d| {
                    row.key[prefix.len()..]
                        .find(d)
                        .map(|at| row.key[..prefix.len() + at + d.len()].to_string())
                });
                if let Some(common) = common {
                    // Every key under this prefix is skipped in one step; a
                    // prefix at or before the marker was listed already.
                    cursor = format!("{common}\u{10FFFF}");
                    jumped = true;
                    if common.as_str() > after {
                        if listing.len() >= max_keys {
                            listing.truncated = true;
                            return Ok(listing);
                        }
                        listing.last = Some(common.clone());
                        listing.prefixes.push(common);
                    }
                    break;
                }
                if listing.len() >= max_keys {
                    listing.truncated = true;
                    return Ok(listing);
                }
                cursor = row.key.clone();
                listing.last = Some(row.key.clone());
                listing.objects.push(row);
            }
            if !jumped && !full {
                return Ok(listing);
            }
        }
    }
}

fn object_entry(row: &ObjectRow) -> Object {
    Object {
        key: Some(row.key.clone()),
        e_tag: Some(ETag::Strong(row.etag.clone())),
        last_modified: Some(timestamp(row.last_modified)),
        size: Some(row.size),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        owner: Some(owner()),
        ..Default::default()
    }
}

/// ListObjects (v1) is v2 with a marker for a token, and owners always.
pub(super) async fn list_objects(
    gw: &Gateway,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let marker = req.input.marker.clone();
    // v1 sends its top-level Prefix as given even with encoding-type=url
    // (clients decode only keys, prefixes, the delimiter and markers).
    let prefix = req.input.prefix.clone().unwrap_or_default();
    let v2 = list_objects_v2(gw, req.map_input(Into::into)).await?;
    Ok(v2.map_output(|v2| {
        let next_marker = if v2.is_truncated == Some(true) {
            v2.next_continuation_token.clone()
        } else {
            None
        };
        ListObjectsOutput {
            name: v2.name,
            prefix: Some(prefix),
            delimiter: v2.delimiter,
            max_keys: v2.max_keys,
            is_truncated: v2.is_truncated,
            marker: Some(marker.unwrap_or_default()),
            next_marker,
            // v1 always names owners.
            contents: v2.contents.map(|objects| {
                objects
                    .into_iter()
                    .map(|mut o| {
                        o.owner = Some(owner());
                        o
                    })
                    .collect()
            }),
            common_prefixes: v2.common_prefixes,
            encoding_type: v2.encoding_type,
            ..Default::default()
        }
    }))
}

pub(super) async fn list_objects_v2(
    gw: &Gateway,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    let bucket = gw.bucket(&input.bucket).await?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let max_keys = input.max_keys.unwrap_or(1000);
    if max_keys < 0 {
        return Err(s3_error!(InvalidArgument, "max-keys cannot be negative"));
    }
    let max_keys = max_keys.min(1000);
    // A continuation token is the last entry of the page before.
    let after = match (&input.continuation_token, &input.start_after) {
        (Some(token), Some(start)) => token.clone().max(start.clone()),
        (Some(token), None) => token.clone(),
        (None, Some(start)) => start.clone(),
        (None, None) => String::new(),
    };
    let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
    let listing = gw
        .list(
            &bucket,
            &prefix,
            delimiter.as_deref(),
            &after,
            max_keys as usize,
        )
        .await?;
    let page = v2_page(&input, bucket.name, prefix, delimiter, max_keys, listing);
    Ok(S3Response::new(page))
}

/// The answer to a v2 listing: keys and prefixes URL-encoded where the
/// client asked, owners only where it asked.
fn v2_page(
    input: &ListObjectsV2Input,
    name: String,
    prefix: String,
    delimiter: Option<String>,
    max_keys: i32,
    listing: Listing,
) -> ListObjectsV2Output {
    let with_owner = input.fetch_owner == Some(true);
    let encode = input
        .encoding_type
        .as_ref()
        .is_some_and(|e| e.as_str() == EncodingType::URL);
    let out = |s: String| {
        if encode {
            mds_core::env::url_encode_path(&s)
        } else {
            s
        }
    };
    ListObjectsV2Output {
        name: Some(name),
        prefix: Some(out(prefix)),
        delimiter: delimiter.map(out),
        max_keys: Some(max_keys),
        key_count: Some(listing.len() as i32),
        is_truncated: Some(listing.truncated),
        continuation_token: input.continuation_token.clone(),
        next_continuation_token: if listing.truncated {
            listing.last
        } else {
            None
        },
        start_after: input.start_after.clone().map(out),
        encoding_type: input.encoding_type.clone(),
        contents: Some(
            listing
                .objects
                .iter()
                .map(|row| {
                    let mut entry = object_entry(row);
                    entry.key = entry.key.map(out);
                    if !with_owner {
                        entry.owner = None;
                    }
                    entry
                })
                .collect(),
        ),
        common_prefixes: Some(
            listing
                .prefixes
                .into_iter()
                .map(|p| CommonPrefix {
                    prefix: Some(out(p)),
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// Buckets are unversioned: every object is its only version, "null".
pub(super) async fn list_object_versions(
    gw: &Gateway,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    let bucket = gw.bucket(&input.bucket).await?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000);
    let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
    let after = input.key_marker.clone().unwrap_or_default();
    let listing = gw
        .list(
            &bucket,
            &prefix,
            delimiter.as_deref(),
            &after,
            max_keys as usize,
        )
        .await?;
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(bucket.name),
        prefix: input.prefix,
        delimiter,
        key_marker: input.key_marker,
        max_keys: Some(max_keys),
        is_truncated: Some(listing.truncated),
        next_key_marker: if listing.truncated {
            listing.last
        } else {
            None
        },
        next_version_id_marker: listing.truncated.then(|| "null".to_string()),
        versions: Some(listing.objects.iter().map(version_entry).collect()),
        common_prefixes: Some(
            listing
                .prefixes
                .into_iter()
                .map(|p| CommonPrefix { prefix: Some(p) })
                .collect(),
        ),
        ..Default::default()
    }))
}

fn version_entry(row: &ObjectRow) -> ObjectVersion {
    ObjectVersion {
        key: Some(row.key.clone()),
        version_id: Some("null".to_string()),
        is_latest: Some(true),
        e_tag: Some(ETag::Strong(row.etag.clone())),
        last_modified: Some(timestamp(row.last_modified)),
        size: Some(row.size),
        owner: Some(owner()),
        storage_class: Some(ObjectVersionStorageClass::from_static(
            ObjectVersionStorageClass::STANDARD,
        )),
        ..Default::default()
    }
}
