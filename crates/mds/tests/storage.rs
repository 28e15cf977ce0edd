//! Storage through the real binary: the blob layer's promises (dedup,
//! verified reads, crash safety, collection) and the MIOSA object routes'
//! edge cases. S3 clients (boto3, aws-cli) are driven from tests/sdk.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, Mds};
use serde_json::json;

/// Chunk files in the blob store.
fn blob_files(data_dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(dirs) = std::fs::read_dir(data_dir.join("storage/blobs")) else {
        return files;
    };
    for dir in dirs.flatten() {
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            files.push(file.path());
        }
    }
    files
}

fn temp_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("storage/tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn bucket(mds: &Mds, name: &str) -> String {
    mds.post("/api/v1/projects", json!({ "name": name }))
        .expect(201);
    let created = mds
        .post(
            "/api/v1/storage/buckets",
            json!({ "name": name, "project_id": name }),
        )
        .expect(201);
    created.data()["id"].as_str().unwrap().to_string()
}

fn put(mds: &Mds, bucket: &str, key: &str, body: Vec<u8>) -> common::Answer {
    common::answer(
        mds.raw()
            .put(format!(
                "{}/api/v1/storage/buckets/{bucket}/objects/{key}",
                mds.url
            ))
            .bearer_auth(&mds.admin_key)
            .body(body)
            .send()
            .unwrap(),
    )
}

fn get(mds: &Mds, bucket: &str, key: &str) -> (u16, Vec<u8>) {
    let response = mds
        .raw()
        .get(format!(
            "{}/api/v1/storage/buckets/{bucket}/objects/{key}",
            mds.url
        ))
        .bearer_auth(&mds.admin_key)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.bytes().map(|b| b.to_vec()).unwrap_or_default(),
    )
}

#[test]
fn identical_content_is_stored_once_and_collected_when_unreferenced() {
    let mds = Mds::start_with(
        &["--storage-grace-secs", "0", "--storage-gc-secs", "1"],
        &[],
    );
    let bucket = bucket(&mds, "dedup");
    let data: Vec<u8> = (0..(20 << 20)).map(|i: u32| (i % 251) as u8).collect();
    put(&mds, &bucket, "one", data.clone()).expect(200);
    let after_one = blob_files(&mds.data_dir).len();
    assert_eq!(after_one, 3, "20 MiB in 8 MiB chunks");
    put(&mds, &bucket, "two", data.clone()).expect(200);
    assert_eq!(
        blob_files(&mds.data_dir).len(),
        after_one,
        "a duplicate adds no chunk"
    );
    let metrics = mds
        .raw()
        .get(format!("{}/metrics", mds.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("mds_storage_bytes 20971520"), "{metrics}");
    assert_eq!(get(&mds, &bucket, "two"), (200, data.clone()));

    mds.delete(&format!("/api/v1/storage/buckets/{bucket}/objects/one"))
        .expect(200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        blob_files(&mds.data_dir).len(),
        after_one,
        "still referenced by two"
    );
    mds.delete(&format!("/api/v1/storage/buckets/{bucket}/objects/two"))
        .expect(200);
    wait_until(Duration::from_secs(10), || {
        blob_files(&mds.data_dir).is_empty()
    })
    .expect("unreferenced chunks are collected");
}

#[test]
fn a_corrupted_chunk_is_an_error_never_wrong_bytes() {
    let mds = Mds::start();
    let bucket = bucket(&mds, "rot");
    put(&mds, &bucket, "small", b"precious bytes".to_vec()).expect(200);
    let big: Vec<u8> = (0..(9 << 20)).map(|i: u32| (i % 13) as u8).collect();
    put(&mds, &bucket, "big", big).expect(200);
    // The small object's chunk is kept in its index row; the large one's
    // two chunks are files.
    let files = blob_files(&mds.data_dir);
    assert_eq!(files.len(), 2);
    let mut control = mds.superuser_config();
    control.dbname("mds_control");
    common::query(
        &control,
        "UPDATE storage_blobs SET inline = overlay(inline placing '\\x00'::bytea from 1)
         WHERE inline IS NOT NULL",
    );
    for file in &files {
        let mut bytes = std::fs::read(file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(file, bytes).unwrap();
    }
    // A small object fails before any header is sent: a clean 500.
    let (status, body) = get(&mds, &bucket, "small");
    assert_eq!(status, 500);
    assert!(!body.windows(8).any(|w| w == b"precious"));
    // A large one fails before its first chunk: no byte of it goes out.
    let response = mds
        .raw()
        .get(format!(
            "{}/api/v1/storage/buckets/{bucket}/objects/big",
            mds.url
        ))
        .bearer_auth(&mds.admin_key)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 500);
    assert!(mds.log().contains("corrupt"), "{}", mds.log());
}

#[test]
fn an_object_over_the_limit_is_413_and_leaves_nothing() {
    let mds = Mds::start_with(&["--max-object-bytes", "1048576"], &[]);
    let bucket = bucket(&mds, "limits");
    let answer = put(&mds, &bucket, "big", vec![7; (1 << 20) + 1]);
    answer.expect_error(413, "TOO_LARGE");
    put(&mds, &bucket, "fits", vec![7; 1 << 20]).expect(200);
    let (status, _) = get(&mds, &bucket, "big");
    assert_eq!(status, 404);
    assert_eq!(temp_files(&mds.data_dir), 0);
}

#[test]
fn hostile_keys_are_refused_clearly_or_kept_exactly() {
    let mds = Mds::start();
    let bucket = bucket(&mds, "hostile");
    let long = "k".repeat(1024);
    for (sent, stored) in [
        ("..%2F..%2Fetc%2Fpasswd", "../../etc/passwd"),
        ("%2Fleading", "/leading"),
        ("caf%C3%A9/%E2%9C%93.txt", "café/✓.txt"),
        ("a%20b%2Bc", "a b+c"),
        (long.as_str(), long.as_str()),
    ] {
        put(&mds, &bucket, sent, sent.as_bytes().to_vec()).expect(200);
        let listed = mds
            .get(&format!(
                "/api/v1/storage/buckets/{bucket}/objects?max_keys=1000"
            ))
            .expect(200);
        let keys: Vec<&str> = listed
            .data()
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["key"].as_str().unwrap())
            .collect();
        assert!(keys.contains(&stored), "{stored:?} not in {keys:?}");
        assert_eq!(get(&mds, &bucket, sent), (200, sent.as_bytes().to_vec()));
    }
    // Nothing escaped into the filesystem under its name.
    assert!(!mds.data_dir.join("storage/etc").exists());
    put(&mds, &bucket, &"k".repeat(1025), vec![]).expect_error(422, "VALIDATION_ERROR");
    put(&mds, &bucket, "bell%07", vec![]).expect_error(422, "VALIDATION_ERROR");
    put(&mds, &bucket, "nul%00", vec![]).expect_error(422, "VALIDATION_ERROR");
    let empty = put(&mds, &bucket, "", vec![]);
    assert!(empty.status == 404 || empty.status == 405, "{}", empty.body);
}

/// A body that yields `total` bytes in 1 MiB reads, counting what it sent.
struct SlowBody {
    left: u64,
    sent: Arc<AtomicU64>,
}

impl Read for SlowBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.left).min(1 << 20) as usize;
        buf[..n].fill(0xAB);
        self.left -= n as u64;
        self.sent.fetch_add(n as u64, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(2));
        Ok(n)
    }
}

#[test]
fn kill_9_during_a_200_mb_upload_leaves_no_object_and_no_blob() {
    let args = ["--storage-grace-secs", "0", "--storage-gc-secs", "1"];
    let mut mds = Mds::start_with(&args, &[]);
    let bucket = bucket(&mds, "crash");
    let root = mds.root.clone();
    let sent = Arc::new(AtomicU64::new(0));
    let upload = {
        let url = format!(
            "{}/api/v1/storage/buckets/{bucket}/objects/big.bin",
            mds.url
        );
        let key = mds.admin_key.clone();
        let body = SlowBody {
            left: 200 << 20,
            sent: sent.clone(),
        };
        std::thread::spawn(move || {
            reqwest::blocking::Client::new()
                .put(url)
                .bearer_auth(key)
                .body(reqwest::blocking::Body::sized(body, 200 << 20))
                .send()
        })
    };
    // Well into it (five 8 MiB chunks stored at least), not at a set
    // speed: a debug build on two shared cores hashes slowly.
    wait_until(Duration::from_secs(180), || {
        sent.load(Ordering::SeqCst) > 48 << 20
    })
    .expect("the upload got going");
    mds.kill9();
    assert!(
        upload.join().unwrap().is_err(),
        "the upload cannot have succeeded"
    );

    let again = Mds::start_in(&root, &args, &[]).unwrap_or_else(|log| panic!("{log}"));
    let (status, _) = get(&again, &bucket, "big.bin");
    assert_eq!(status, 404, "no partial object");
    assert_eq!(
        temp_files(&again.data_dir),
        0,
        "partial chunks are swept at start"
    );
    wait_until(Duration::from_secs(10), || {
        blob_files(&again.data_dir).is_empty()
    })
    .expect("no chunk of the cut upload survives");
    // The store still works.
    put(&again, &bucket, "after", b"ok".to_vec()).expect(200);
    assert_eq!(get(&again, &bucket, "after"), (200, b"ok".to_vec()));
    drop(mds);
}

#[test]
fn deleting_a_storage_service_deletes_its_buckets_and_their_chunks() {
    let mds = Mds::start_with(
        &["--storage-grace-secs", "0", "--storage-gc-secs", "1"],
        &[],
    );
    mds.post("/api/v1/projects", json!({ "name": "gone" }))
        .expect(201);
    let service = mds
        .post(
            "/api/v1/projects/gone/data-services?wait=true",
            json!({ "type": "storage" }),
        )
        .expect(201);
    assert_eq!(service.data()["state"], "running", "{}", service.body);
    put(&mds, "gone--production", "file", vec![9; 100_000]).expect(200);
    assert_eq!(blob_files(&mds.data_dir).len(), 1);
    // Buckets of an attached service are deleted with the service only.
    mds.delete("/api/v1/storage/buckets/gone--production?force=true")
        .expect_error(409, "BUCKET_ATTACHED");
    mds.delete("/api/v1/projects/gone/data-services/storage?confirm=storage")
        .expect(200);
    wait_until(Duration::from_secs(15), || {
        mds.get("/api/v1/storage/buckets/gone--production").status == 404
    })
    .expect("the bucket goes with its service");
    // The restore point taken before the delete holds the chunks...
    let points = mds
        .get("/api/v1/projects/gone/environments/production/restore-points")
        .expect(200);
    let points = points.data().as_array().unwrap().clone();
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0]["reason"], "before-delete");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(blob_files(&mds.data_dir).len(), 1, "held by the point");
    // ...until it goes (deleted here; expired, in time).
    for env in ["production", "staging"] {
        let listed = mds
            .get(&format!(
                "/api/v1/projects/gone/environments/{env}/restore-points"
            ))
            .expect(200);
        for point in listed.data().as_array().unwrap() {
            mds.delete(&format!(
                "/api/v1/restore-points/{}",
                point["id"].as_str().unwrap()
            ))
            .expect(200);
        }
    }
    wait_until(Duration::from_secs(10), || {
        blob_files(&mds.data_dir).is_empty()
    })
    .expect("and its chunks are collected");
}

#[test]
fn the_cli_copies_lists_presigns_and_removes() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({ "name": "cli" }))
        .expect(201);
    let (ok, out, err) = mds.cli(&["attach", "storage", "-p", "cli"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("STORAGE_BUCKET"), "{out}");
    let file = mds.root.join("photo.png");
    let data: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 7) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let path = file.to_str().unwrap();
    let (ok, out, err) = mds.cli(&["storage", "cp", "-p", "cli", path, ":img/photo.png"]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = mds.cli(&["storage", "ls", "-p", "cli", "img/"]);
    assert!(
        ok && out.contains("img/photo.png") && out.contains("image/png"),
        "{out}"
    );
    let back = mds.root.join("back.png");
    let (ok, out, err) = mds.cli(&[
        "storage",
        "cp",
        "-p",
        "cli",
        ":img/photo.png",
        back.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let (ok, url, _) = mds.cli(&["storage", "presign", "-p", "cli", "img/photo.png"]);
    assert!(ok);
    let fetched = reqwest::blocking::get(url.trim()).unwrap();
    assert_eq!(fetched.bytes().unwrap().len(), data.len());
    let (ok, _, _) = mds.cli(&["storage", "rm", "-p", "cli", ":img/photo.png"]);
    assert!(ok);
    let (ok, out, err) = mds.cli(&["storage", "ls", "-p", "cli", "-e", "nowhere"]);
    assert!(
        !ok && err.contains("no storage in environment"),
        "{out}{err}"
    );
}

/// `KEY`, `SECRET`, URL of a server's admin S3 key.
fn admin_s3(mds: &Mds) -> (String, String, String) {
    let text = std::fs::read_to_string(mds.data_dir.join("s3-admin.env")).unwrap();
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    (
        get("AWS_ACCESS_KEY_ID"),
        get("AWS_SECRET_ACCESS_KEY"),
        get("AWS_ENDPOINT_URL_S3"),
    )
}

#[test]
fn chunks_can_live_on_another_s3_service() {
    // The backend is a second mds's S3 endpoint, spoken to through the
    // object_store crate's S3 client.
    let backend = Mds::start();
    let backend_bucket = bucket(&backend, "chunks");
    let (key, secret, endpoint) = admin_s3(&backend);
    let url = endpoint.replace("http://", &format!("http://{key}:{secret}@")) + "/chunks/a";
    let mds = Mds::start_with(
        &[
            "--s3-url",
            &url,
            "--storage-grace-secs",
            "0",
            "--storage-gc-secs",
            "1",
        ],
        &[],
    );
    assert!(blob_files(&mds.data_dir).is_empty());
    let bucket = bucket(&mds, "front");
    let data: Vec<u8> = (0..(9 << 20)).map(|i: u32| (i % 239) as u8).collect();
    put(&mds, &bucket, "remote.bin", data.clone()).expect(200);
    put(&mds, &bucket, "copy.bin", data.clone()).expect(200);
    assert_eq!(get(&mds, &bucket, "remote.bin"), (200, data));
    assert!(
        blob_files(&mds.data_dir).is_empty(),
        "nothing stored locally"
    );
    let stored = |mds: &Mds| {
        let listed = mds
            .get(&format!(
                "/api/v1/storage/buckets/{backend_bucket}/objects?prefix=a/blobs/"
            ))
            .expect(200);
        listed.data().as_array().unwrap().len()
    };
    assert_eq!(
        stored(&backend),
        2,
        "two chunks, stored once for both objects"
    );
    for key in ["remote.bin", "copy.bin"] {
        mds.delete(&format!("/api/v1/storage/buckets/{bucket}/objects/{key}"))
            .expect(200);
    }
    wait_until(Duration::from_secs(10), || stored(&backend) == 0)
        .expect("collected chunks are deleted from the backend");
}
