//! A real PostgreSQL (the managed engine, as `mds server` runs it) with the
//! control database migrated, and storage over a temporary directory.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, TryStreamExt};
use mds_crypto::MasterKey;
use mds_engines::{find_postgres_binaries, ManagedPostgres, OsUser};
use mds_storage::{BucketRow, Storage, StorageConfig};
use mds_store::{NewBucket, ObjectRow, Store};
use serde_json::{json, Value};

pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub pg: ManagedPostgres,
    pub store: Store,
    pub storage: Storage,
}

impl Cluster {
    /// Storage with no grace: a released chunk is collectable at once.
    pub async fn start() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("mds-storage-")
            .tempdir()
            .unwrap();
        let engines = tmp.path().join("engines");
        std::fs::create_dir_all(&engines).unwrap();
        let key = MasterKey::from_hex(&"42".repeat(32)).unwrap();
        let pg = ManagedPostgres::start(
            &engines,
            find_postgres_binaries().unwrap(),
            OsUser::for_engines(None).unwrap(),
            &key,
        )
        .await
        .unwrap();
        let admin = pg.admin_config();
        mds_store::ensure_database(&admin, mds_store::CONTROL_DATABASE)
            .await
            .unwrap();
        let mut config = admin.clone();
        config.dbname(mds_store::CONTROL_DATABASE);
        let store = Store::connect(config, 16).await.unwrap();
        store.migrate().await.unwrap();
        let storage = Storage::open(
            store.clone(),
            StorageConfig {
                dir: tmp.path().join("storage"),
                max_object_bytes: 1 << 30,
                grace: Duration::ZERO,
                remote: None,
            },
            &key,
        )
        .unwrap();
        Self {
            tmp,
            pg,
            store,
            storage,
        }
    }

    pub async fn stop(self) {
        self.store.close();
        self.pg.shutdown().await;
    }

    pub async fn bucket(&self, name: &str) -> BucketRow {
        self.store
            .create_bucket(&NewBucket {
                id: &format!("bkt_{name}"),
                name,
                project_id: None,
                binding_id: None,
                visibility: "private",
            })
            .await
            .unwrap()
    }

    pub async fn put(&self, bucket: &BucketRow, key: &str, data: &[u8]) -> ObjectRow {
        let pieces: Vec<std::io::Result<Bytes>> = data
            .chunks(1 << 20)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let meta = json!({ "x-amz-meta-key": key });
        self.storage
            .put_object(
                bucket,
                key,
                "application/octet-stream",
                stream::iter(pieces),
                |_| Ok(meta),
            )
            .await
            .unwrap()
    }

    pub async fn get(&self, bucket: &BucketRow, key: &str) -> Vec<u8> {
        let object = self.storage.object(bucket, key).await.unwrap();
        let body = self.storage.read(&object, None).await.unwrap();
        let pieces: Vec<Bytes> = body.try_collect().await.unwrap();
        pieces.concat()
    }

    /// Every object of a bucket, in key order.
    pub async fn objects(&self, bucket: &BucketRow) -> Vec<ObjectRow> {
        self.store
            .list_objects(&bucket.id, "", "", 1_000_000)
            .await
            .unwrap()
    }

    /// Where the file of chunk `hash` lives.
    pub fn chunk_path(&self, hash: &[u8]) -> std::path::PathBuf {
        let hex = hex::encode(hash);
        self.tmp
            .path()
            .join("storage/blobs")
            .join(&hex[..2])
            .join(hex)
    }

    /// Runs the collector once pins and grace (zero) have passed.
    pub async fn collect(&self) -> usize {
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.storage.collect_garbage().await.unwrap()
    }
}

/// `len` bytes that differ with `seed` and do not repeat within a chunk.
pub fn data(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

pub fn metadata_of(key: &str) -> Value {
    json!({ "x-amz-meta-key": key })
}
