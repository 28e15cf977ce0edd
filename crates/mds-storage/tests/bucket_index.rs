//! Bucket restore points that copy no content: snapshot (with a hold),
//! verify, restore and release, on a real PostgreSQL and chunk files.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::time::Instant;

use common::{data, metadata_of, Cluster};
use futures_util::StreamExt;
use mds_storage::{BucketIndex, StorageError};
use mds_store::{Manifest, NewObject, ObjectRow, PutCondition};

const MIB: usize = 1 << 20;

/// Asserts that the bucket's rows are exactly the index's.
fn assert_rows(rows: &[ObjectRow], index: &BucketIndex) {
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let want: Vec<&str> = index.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, want);
    for (row, o) in rows.iter().zip(&index.objects) {
        assert_eq!(row.size, o.size, "{}", o.key);
        assert_eq!(row.etag, o.etag, "{}", o.key);
        assert_eq!(row.content_type, o.content_type, "{}", o.key);
        assert_eq!(row.metadata, o.metadata, "{}", o.key);
        assert_eq!(row.chunks, o.chunks, "{}", o.key);
        assert_eq!(row.chunk_sizes, o.chunk_sizes, "{}", o.key);
        assert_eq!(row.last_modified, o.last_modified, "{}", o.key);
    }
}

fn io_kind(e: &StorageError) -> ErrorKind {
    match e {
        StorageError::Io(io) => io.kind(),
        other => panic!("not an I/O error: {other:?}"),
    }
}

#[tokio::test]
async fn a_restore_point_survives_changes_and_the_collector_and_restores_exactly() {
    let c = Cluster::start().await;
    let prod = c.bucket("prod").await;

    // Small (inline) and multi-chunk objects; "dup" shares b's chunks.
    let mut bytes = BTreeMap::new();
    for (key, len) in [
        ("a.txt", 5),
        ("b.bin", 9 * MIB),
        ("c.txt", 1000),
        ("e.bin", 17 * MIB),
        ("empty", 0),
    ] {
        let body = data(key, len);
        c.put(&prod, key, &body).await;
        bytes.insert(key.to_string(), body);
    }
    c.put(&prod, "dup.bin", &bytes["b.bin"]).await;
    bytes.insert("dup.bin".to_string(), bytes["b.bin"].clone());

    let index = c.storage.snapshot_bucket(&prod.id, "rp1").await.unwrap();
    assert_eq!(index.bucket_id, prod.id);
    assert_eq!(index.objects.len(), 6);
    assert_rows(&c.objects(&prod).await, &index);
    let b = index.objects.iter().find(|o| o.key == "b.bin").unwrap();
    assert_eq!(b.chunks.len(), 2, "9 MiB is two chunks");
    assert_eq!(b.metadata, metadata_of("b.bin"));

    // The index as the lead stores it: JSON, chunk addresses in hex.
    let json = serde_json::to_string(&index).unwrap();
    assert!(json.contains(&hex::encode(&b.chunks[0])));
    let back: BucketIndex = serde_json::from_str(&json).unwrap();
    assert_eq!(back, index);

    let report = c.storage.verify_index(&index).await.unwrap();
    assert_eq!(report.objects, 6);
    // a, c, empty inline; b (2, shared with dup) and e (3) in files.
    assert_eq!(report.chunks, 8);
    assert_eq!(report.inline_chunks, 3);
    assert_eq!(report.bytes, (5 + 1000 + 9 * MIB + 17 * MIB) as u64);

    // Change everything: overwrite, delete, add; then collect.
    c.put(&prod, "a.txt", b"changed").await;
    c.put(&prod, "e.bin", &data("e2", 10 * MIB)).await;
    assert!(c.storage.delete_object(&prod, "c.txt").await.unwrap());
    assert!(c.storage.delete_object(&prod, "b.bin").await.unwrap());
    assert!(c.storage.delete_object(&prod, "dup.bin").await.unwrap());
    c.put(&prod, "new.txt", b"new").await;
    assert_eq!(c.collect().await, 0, "the hold keeps every listed chunk");
    for chunk in &index
        .objects
        .iter()
        .find(|o| o.key == "e.bin")
        .unwrap()
        .chunks
    {
        assert!(c.chunk_path(chunk).exists());
    }
    c.storage.verify_index(&index).await.unwrap();

    // Restore: the bucket holds exactly the index's objects again.
    let restored = c.storage.restore_bucket(&prod.id, &index).await.unwrap();
    assert_eq!(restored.removed, 4, "a.txt, e.bin, empty, new.txt");
    assert_eq!(restored.restored, 6);
    assert_rows(&c.objects(&prod).await, &index);
    for (key, body) in &bytes {
        assert_eq!(&c.get(&prod, key).await, body, "{key}");
    }
    // What the restore replaced is released: a.txt's and new.txt's rows,
    // e2's two chunks.
    assert_eq!(c.collect().await, 4);

    // Into another bucket: the same objects, its own ones gone.
    let staging = c.bucket("staging").await;
    c.put(&staging, "only-in-staging", b"x").await;
    c.put(&staging, "a.txt", b"staging's a").await;
    let into = c.storage.restore_bucket(&staging.id, &index).await.unwrap();
    assert_eq!((into.removed, into.restored), (2, 6));
    assert_rows(&c.objects(&staging).await, &index);
    for (key, body) in &bytes {
        assert_eq!(&c.get(&staging, key).await, body, "{key}");
    }
    assert_eq!(c.collect().await, 2);

    // Releasing the hold is idempotent; the restored objects still count
    // their own references.
    assert!(c.storage.release_hold("rp1").await.unwrap());
    assert!(!c.storage.release_hold("rp1").await.unwrap());
    assert_eq!(c.collect().await, 0);
    c.storage.verify_index(&index).await.unwrap();

    // With nothing left referring to them, the chunks go; the index can
    // then neither be verified nor restored, and a failed restore changes
    // nothing.
    for bucket in [&prod, &staging] {
        for o in &index.objects {
            c.storage.delete_object(bucket, &o.key).await.unwrap();
        }
    }
    c.put(&prod, "kept", b"kept").await;
    assert_eq!(c.collect().await, 8);
    let err = c.storage.verify_index(&index).await.unwrap_err();
    assert_eq!(io_kind(&err), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("\"a.txt\""), "{err}");
    let err = c
        .storage
        .restore_bucket(&prod.id, &index)
        .await
        .unwrap_err();
    assert_eq!(io_kind(&err), ErrorKind::NotFound, "{err}");
    let left = c.objects(&prod).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key, "kept");

    // Every reference was counted and released exactly once.
    c.storage.delete_object(&prod, "kept").await.unwrap();
    c.collect().await;
    assert_eq!(c.store.blob_usage().await.unwrap(), (0, 0));
    c.stop().await;
}

#[tokio::test]
async fn verify_names_the_object_of_a_missing_or_corrupt_chunk() {
    let c = Cluster::start().await;
    let bucket = c.bucket("verify").await;
    c.put(&bucket, "first.txt", b"small").await;
    c.put(&bucket, "second.bin", &data("second", 9 * MIB)).await;
    c.put(&bucket, "third.bin", &data("third", MIB)).await;
    let index = c.storage.snapshot_bucket(&bucket.id, "rp").await.unwrap();

    let second = &index.objects[1];
    let path = c.chunk_path(&second.chunks[1]);
    let original = std::fs::read(&path).unwrap();
    let mut corrupt = original.clone();
    corrupt[100] ^= 1;
    std::fs::write(&path, &corrupt).unwrap();
    let err = c.storage.verify_index(&index).await.unwrap_err();
    assert_eq!(io_kind(&err), ErrorKind::InvalidData, "{err}");
    let text = err.to_string();
    assert!(text.contains("\"second.bin\""), "{text}");
    assert!(text.contains(&hex::encode(&second.chunks[1])), "{text}");
    assert!(text.contains("corrupt"), "{text}");

    std::fs::remove_file(&path).unwrap();
    let err = c.storage.verify_index(&index).await.unwrap_err();
    assert_eq!(io_kind(&err), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("\"second.bin\""), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    std::fs::write(&path, &original).unwrap();
    c.storage.verify_index(&index).await.unwrap();

    // A malformed index (it comes from a file) is refused before any write.
    let mut bad = index.clone();
    bad.objects[2].size += 1;
    let err = c
        .storage
        .restore_bucket(&bucket.id, &bad)
        .await
        .unwrap_err();
    assert_eq!(io_kind(&err), ErrorKind::InvalidData, "{err}");
    let mut bad = index.clone();
    bad.objects[0].chunks[0].truncate(31);
    assert!(c.storage.verify_index(&bad).await.is_err());
    let mut bad = index.clone();
    bad.objects[1].key = bad.objects[0].key.clone();
    assert!(c.storage.restore_bucket(&bucket.id, &bad).await.is_err());
    assert!(matches!(
        c.storage.restore_bucket("bkt_nope", &index).await,
        Err(StorageError::NoSuchBucket)
    ));
    assert!(matches!(
        c.storage.snapshot_bucket("bkt_nope", "rp-x").await,
        Err(StorageError::NoSuchBucket)
    ));

    // A second snapshot under the same hold id replaces the hold.
    c.storage.delete_object(&bucket, "third.bin").await.unwrap();
    let again = c.storage.snapshot_bucket(&bucket.id, "rp").await.unwrap();
    assert_eq!(again.objects.len(), 2);
    let holds = c.store.bucket_holds().await.unwrap();
    assert_eq!(holds.len(), 1);
    assert_eq!((holds[0].id.as_str(), holds[0].chunks), ("rp", 3));
    assert_eq!(c.collect().await, 1, "third.bin's chunk is no longer held");
    assert!(c.storage.release_hold("rp").await.unwrap());
    assert_eq!(c.collect().await, 0, "the objects still refer to the rest");
    assert!(c.store.bucket_holds().await.unwrap().is_empty());

    // An empty bucket's index empties a bucket.
    let empty = c.bucket("empty").await;
    let nothing = c
        .storage
        .snapshot_bucket(&empty.id, "rp-empty")
        .await
        .unwrap();
    assert!(nothing.objects.is_empty());
    let report = c.storage.verify_index(&nothing).await.unwrap();
    assert_eq!((report.objects, report.chunks), (0, 0));
    let emptied = c
        .storage
        .restore_bucket(&bucket.id, &nothing)
        .await
        .unwrap();
    assert_eq!((emptied.removed, emptied.restored), (2, 0));
    assert!(c.objects(&bucket).await.is_empty());
    assert!(c.storage.release_hold("rp-empty").await.unwrap());
    assert_eq!(c.collect().await, 3, "first.txt, second.bin's two");
    assert_eq!(c.store.blob_usage().await.unwrap(), (0, 0));
    c.stop().await;
}

#[tokio::test]
async fn ten_thousand_objects_snapshot_in_well_under_a_second() {
    let c = Cluster::start().await;
    let bucket = c.bucket("many").await;
    let store = &c.store;
    let metadata = serde_json::json!({});
    let count = 10_000;
    // Rows written straight through the store, 32 at a time: the put path
    // is not what this measures.
    let began = Instant::now();
    let puts = (0..count).map(|i| {
        let metadata = &metadata;
        let bucket = &bucket;
        async move {
            let key = format!("dir{}/object-{i:05}", i % 10);
            let body = format!("object {i}");
            let hash = blake3::hash(body.as_bytes());
            let manifest = Manifest {
                chunks: vec![hash.as_bytes().to_vec()],
                chunk_sizes: vec![body.len() as i64],
            };
            store
                .put_inline_object(
                    &NewObject {
                        bucket_id: &bucket.id,
                        key: &key,
                        etag: "0123456789abcdef0123456789abcdef",
                        content_type: "text/plain",
                        metadata,
                        manifest: &manifest,
                        condition: PutCondition::default(),
                    },
                    hash.as_bytes(),
                    body.as_bytes(),
                    0.0,
                )
                .await
                .unwrap();
        }
    });
    futures_util::stream::iter(puts)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    println!("wrote {count} objects in {:?}", began.elapsed());

    let began = Instant::now();
    let index = c.storage.snapshot_bucket(&bucket.id, "rp").await.unwrap();
    let snapshot = began.elapsed();
    assert_eq!(index.objects.len(), count);
    println!("snapshot of {count} objects (with hold): {snapshot:?}");

    let began = Instant::now();
    let json = serde_json::to_vec(&index).unwrap();
    println!(
        "index as JSON: {} bytes in {:?}",
        json.len(),
        began.elapsed()
    );

    let began = Instant::now();
    let report = c.storage.verify_index(&index).await.unwrap();
    assert_eq!(report.chunks, count as u64);
    println!("verify of {count} inline chunks: {:?}", began.elapsed());

    let began = Instant::now();
    let restored = c.storage.restore_bucket(&bucket.id, &index).await.unwrap();
    assert_eq!(restored.restored, count as u64);
    println!("restore of {count} objects: {:?}", began.elapsed());

    let began = Instant::now();
    assert!(c.storage.release_hold("rp").await.unwrap());
    println!("release of the hold: {:?}", began.elapsed());
    assert!(
        snapshot.as_millis() < 1000,
        "snapshot of {count} objects took {snapshot:?}"
    );
    c.stop().await;
}

// Writers overwrite and delete keys of the bucket while it is restored
// again and again, and the collector runs: no chunk may be collected while
// an object lists it (every object reads back), and none may stay counted
// once nothing lists it (all gone in the end).
#[tokio::test]
async fn restores_amid_writes_keep_every_reference_count_right() {
    let c = Cluster::start().await;
    let bucket = c.bucket("busy").await;
    // Inline ones and single-chunk files (over 32 KiB).
    let body =
        |seed: &str, i: usize| data(seed, if i.is_multiple_of(3) { 40_000 } else { 100 + i });
    for i in 0..20 {
        c.put(&bucket, &format!("k{i}"), &body("seed", i)).await;
    }
    let index = c.storage.snapshot_bucket(&bucket.id, "h").await.unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (storage, bucket, stop) = (c.storage.clone(), bucket.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let (mut done, mut failed) = (0, 0);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let i = (n * 7 + w) % 30;
                let key = format!("k{i}");
                let outcome = if n % 4 == 0 {
                    storage.delete_object(&bucket, &key).await.map(|_| ())
                } else {
                    let body = body(&format!("w{w}-{n}"), i);
                    let pieces = vec![Ok(bytes::Bytes::from(body))];
                    storage
                        .put_object(
                            &bucket,
                            &key,
                            "text/plain",
                            futures_util::stream::iter(pieces),
                            |_| Ok(serde_json::json!({})),
                        )
                        .await
                        .map(|_| ())
                };
                match outcome {
                    Ok(()) => done += 1,
                    // A delete chosen as a deadlock's victim.
                    Err(e) => {
                        eprintln!("{e}");
                        failed += 1
                    }
                }
            }
            (done, failed)
        }));
    }
    let collector = {
        let (storage, stop) = (c.storage.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                storage.collect_garbage().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        c.storage.restore_bucket(&bucket.id, &index).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut done, mut failed) = (0, 0);
    for writer in writers {
        let (d, f) = writer.await.unwrap();
        (done, failed) = (done + d, failed + f);
    }
    collector.await.unwrap();
    println!("{done} writes and deletes beside 8 restores, {failed} failed");
    assert!(done > 100, "the writers ran: {done}");

    c.collect().await;
    for object in c.objects(&bucket).await {
        let body = c.get(&bucket, &object.key).await;
        assert_eq!(body.len() as i64, object.size);
    }
    c.storage.restore_bucket(&bucket.id, &index).await.unwrap();
    assert_rows(&c.objects(&bucket).await, &index);
    for o in &index.objects {
        c.storage.delete_object(&bucket, &o.key).await.unwrap();
    }
    assert!(c.storage.release_hold("h").await.unwrap());
    c.collect().await;
    assert_eq!(c.store.blob_usage().await.unwrap(), (0, 0));
    c.stop().await;
}
