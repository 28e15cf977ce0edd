//! Backups of a managed Redis with real redis-servers: a snapshot is one
//! moment even under writes, its check catches a damaged or different RDB,
//! and a data swap brings back exactly the snapshot's keys, for good.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mds_engines::redis_backup::{probe_rdb, RedisRecord};
use mds_engines::resp::{Reply, Resp};
use mds_engines::{find_redis_server, free_port, OsUser, RedisEngine, RedisSpec};

struct Instance {
    tmp: tempfile::TempDir,
    binary: PathBuf,
    os_user: Option<OsUser>,
    engine: RedisEngine,
    spec: RedisSpec,
}

impl Instance {
    async fn start() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("mds-redis-backup-")
            .tempdir()
            .unwrap();
        // The engines' OS user (as root) must walk down to its dirs.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let binary = find_redis_server().unwrap();
        let os_user = OsUser::for_engines(None).unwrap();
        let engine =
            RedisEngine::new(binary.clone(), tmp.path().join("redis"), os_user.clone()).unwrap();
        let spec = RedisSpec {
            binding_id: "bnd_backup".to_string(),
            port: free_port().unwrap(),
            user: "tenant_1".to_string(),
            password: "tenant-password".to_string(),
            also: Vec::new(),
            admin_password: "admin-password".to_string(),
            maxmemory_bytes: 64 << 20,
            eviction: "noeviction".to_string(),
        };
        engine.ensure_running(&spec).await.unwrap();
        Self {
            tmp,
            binary,
            os_user,
            engine,
            spec,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    async fn tenant(&self) -> Resp {
        Resp::login(
            "127.0.0.1",
            self.spec.port,
            &self.spec.user,
            &self.spec.password,
        )
        .await
        .unwrap()
    }

    async fn probe(&self, rdb: &Path, expect: &RedisRecord) -> Result<(), String> {
        let scratch = self.path("scratch");
        let result = probe_rdb(&self.binary, self.os_user.as_ref(), rdb, &scratch, expect).await;
        assert!(!scratch.exists(), "the scratch dir is removed");
        result.map_err(|e| e.to_string())
    }
}

async fn cmd(conn: &mut Resp, args: &[&str]) -> Reply {
    conn.call(args).await.unwrap().ok().unwrap()
}

fn int(reply: Reply) -> i64 {
    match reply {
        Reply::Integer(n) => n,
        other => panic!("not an integer: {other:?}"),
    }
}

/// 100 keys of every type over two databases, some with a TTL.
async fn write_keys(conn: &mut Resp) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for i in 0..100 {
        let db = if i >= 90 { "1" } else { "0" };
        cmd(conn, &["SELECT", db]).await;
        let (key, args): (String, Vec<String>) = match i % 5 {
            0 => (format!("s:{i}"), vec!["SET".into(), format!("value {i}")]),
            1 => (
                format!("h:{i}"),
                vec![
                    "HSET".into(),
                    "f".into(),
                    i.to_string(),
                    "g".into(),
                    "x".into(),
                ],
            ),
            2 => (
                format!("l:{i}"),
                vec!["RPUSH".into(), "a".into(), i.to_string(), "c".into()],
            ),
            3 => (
                format!("st:{i}"),
                vec!["SADD".into(), "x".into(), i.to_string()],
            ),
            _ => (
                format!("z:{i}"),
                vec![
                    "ZADD".into(),
                    "1".into(),
                    "a".into(),
                    i.to_string(),
                    "b".into(),
                ],
            ),
        };
        let mut full: Vec<&str> = vec![&args[0], &key];
        full.extend(args[1..].iter().map(String::as_str));
        cmd(conn, &full).await;
        if i % 7 == 0 {
            cmd(conn, &["EXPIRE", &key, "3600"]).await;
        }
        keys.push((db.to_string(), key));
    }
    cmd(conn, &["SELECT", "0"]).await;
    keys
}

/// Each key's type, value and whether it has a TTL. Not its DUMP: a set
/// kept as a hash table dumps in an order of the process's hash seed.
async fn state(conn: &mut Resp, keys: &[(String, String)]) -> Vec<(String, Vec<Vec<u8>>, bool)> {
    let mut out = Vec::new();
    for (db, key) in keys {
        cmd(conn, &["SELECT", db]).await;
        let Reply::Simple(kind) = cmd(conn, &["TYPE", key]).await else {
            panic!("TYPE")
        };
        let read: &[&str] = match kind.as_str() {
            "string" => &["GET"],
            "hash" => &["HGETALL"],
            "list" => &["LRANGE", "0", "-1"],
            "set" => &["SMEMBERS"],
            "zset" => &["ZRANGE", "0", "-1", "WITHSCORES"],
            other => panic!("{key} is a {other}"),
        };
        let mut args = vec![read[0], key.as_str()];
        args.extend_from_slice(&read[1..]);
        let mut value = match cmd(conn, &args).await {
            Reply::Bulk(Some(v)) => vec![v],
            Reply::Array(Some(items)) => items
                .into_iter()
                .map(|i| match i {
                    Reply::Bulk(Some(v)) => v,
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        };
        if kind == "set" {
            value.sort();
        }
        let ttl = int(cmd(conn, &["PTTL", key]).await) > 0;
        out.push((kind, value, ttl));
    }
    cmd(conn, &["SELECT", "0"]).await;
    out
}

#[tokio::test]
async fn snapshot_probe_and_replace_bring_back_exactly_the_snapshot() {
    let redis = Instance::start().await;
    let mut conn = redis.tenant().await;
    let keys = write_keys(&mut conn).await;
    let before = state(&mut conn, &keys).await;
    assert_eq!(before.iter().filter(|(_, _, ttl)| *ttl).count(), 15);

    let rdb = redis.path("snap.rdb");
    let record = redis
        .engine
        .snapshot(&redis.spec.binding_id, &rdb)
        .await
        .unwrap();
    assert_eq!(record.keys, 100);
    assert!(!record.samples.is_empty() && record.samples.len() <= 32);
    assert!(
        record.samples.iter().any(|s| s.db == 1),
        "samples cover every db"
    );

    // The engine's own probe: its binary and OS user.
    let scratch = redis.path("scratch-engine");
    redis
        .engine
        .probe_rdb(&rdb, &scratch, &record)
        .await
        .unwrap();
    assert!(!scratch.exists());

    // After the snapshot: other data.
    cmd(&mut conn, &["FLUSHALL"]).await;
    for i in 0..10 {
        cmd(&mut conn, &["SET", &format!("post:{i}"), "later"]).await;
    }
    redis.probe(&rdb, &record).await.unwrap();

    let cut = redis.engine.replace_data(&redis.spec, &rdb).await.unwrap();
    assert_eq!(cut, 1, "the test's own connection");
    let check = async || {
        let mut conn = redis.tenant().await;
        assert_eq!(state(&mut conn, &keys).await, before);
        assert_eq!(int(cmd(&mut conn, &["EXISTS", "post:0"]).await), 0);
        assert_eq!(int(cmd(&mut conn, &["DBSIZE"]).await), 90);
        cmd(&mut conn, &["SELECT", "1"]).await;
        assert_eq!(int(cmd(&mut conn, &["DBSIZE"]).await), 10);
    };
    check().await;

    // The old data is kept aside, AOF included.
    let dir = redis.engine.instance_dir(&redis.spec.binding_id);
    let aside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("replaced-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(aside[0].path().join("appendonlydir").is_dir());

    // The swapped data is the AOF's now: it survives a restart, and writes
    // after the swap too.
    let mut conn = redis.tenant().await;
    cmd(&mut conn, &["SET", "after", "swap"]).await;
    redis.engine.stop(&redis.spec.binding_id).await;
    redis.engine.ensure_running(&redis.spec).await.unwrap();
    let mut conn = redis.tenant().await;
    assert_eq!(
        cmd(&mut conn, &["GET", "after"]).await,
        Reply::Bulk(Some(b"swap".to_vec()))
    );
    cmd(&mut conn, &["DEL", "after"]).await;
    check().await;
    redis.engine.shutdown().await;
}

#[tokio::test]
async fn snapshots_under_writes_match_their_rdb() {
    let redis = Instance::start().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writer_conn = redis.tenant().await;
    let writer_stop = stop.clone();
    let writer = tokio::spawn(async move {
        let mut n = 0u64;
        while !writer_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let i = n.to_string();
            cmd(&mut writer_conn, &["SET", &format!("w:{}", n % 500), &i]).await;
            cmd(&mut writer_conn, &["INCR", "counter"]).await;
            // Keys that expire around the snapshot and the check.
            cmd(
                &mut writer_conn,
                &["SET", &format!("e:{n}"), &i, "PX", "40"],
            )
            .await;
            cmd(
                &mut writer_conn,
                &["HSET", "hash", &format!("f{}", n % 50), &i],
            )
            .await;
            n += 1;
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut taken = Vec::new();
    for round in 0..2 {
        // Two at once: the instance's lock makes them take turns.
        let (a, b) = (
            redis.path(&format!("a{round}.rdb")),
            redis.path(&format!("b{round}.rdb")),
        );
        let (ra, rb) = tokio::join!(
            redis.engine.snapshot(&redis.spec.binding_id, &a),
            redis.engine.snapshot(&redis.spec.binding_id, &b)
        );
        taken.push((a, ra.unwrap()));
        taken.push((b, rb.unwrap()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(
        writes > 100,
        "the writer wrote during the snapshots ({writes})"
    );
    for (rdb, record) in &taken {
        assert!(record.keys > 0 && !record.samples.is_empty());
        redis.probe(rdb, record).await.unwrap();
    }
    assert!(
        taken.windows(2).any(|w| w[0].1 != w[1].1),
        "the snapshots saw different moments"
    );
    redis.engine.shutdown().await;
}

#[tokio::test]
async fn a_damaged_or_different_rdb_fails_the_probe() {
    let redis = Instance::start().await;
    let mut conn = redis.tenant().await;
    write_keys(&mut conn).await;
    let rdb = redis.path("snap.rdb");
    let record = redis
        .engine
        .snapshot(&redis.spec.binding_id, &rdb)
        .await
        .unwrap();
    redis.probe(&rdb, &record).await.unwrap();

    // One bit flipped in the middle: redis refuses the file.
    let mut bytes = std::fs::read(&rdb).unwrap();
    let flipped = redis.path("flipped.rdb");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&flipped, &bytes).unwrap();
    let err = redis.probe(&flipped, &record).await.unwrap_err();
    assert!(
        err.contains("did not load") && err.contains("the end of its log"),
        "{err}"
    );
    println!("bit flip: {err}");
    // In the checksum: caught as well.
    let mut bytes = std::fs::read(&rdb).unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    std::fs::write(&flipped, &bytes).unwrap();
    let err = redis.probe(&flipped, &record).await.unwrap_err();
    assert!(err.contains("Wrong RDB checksum"), "{err}");

    // A record that does not describe the file.
    let mut more = record.clone();
    more.keys += 1;
    let err = redis.probe(&rdb, &more).await.unwrap_err();
    assert!(
        err.contains("key count 100 ") && err.contains("expected 101"),
        "{err}"
    );
    let mut other = record.clone();
    other.samples[0].dump[2] ^= 1;
    let err = redis.probe(&rdb, &other).await.unwrap_err();
    assert!(err.ends_with("differs"), "{err}");
    let mut gone = record.clone();
    gone.samples[0].key = b"no such key".to_vec();
    let err = redis.probe(&rdb, &gone).await.unwrap_err();
    assert!(
        err.contains("\"no such key\"") && err.ends_with("is missing"),
        "{err}"
    );

    // A swap to a file that does not load changes nothing.
    let err = redis
        .engine
        .replace_data(&redis.spec, &flipped)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did not load"), "{err}");
    assert_eq!(
        int(cmd(&mut conn, &["DBSIZE"]).await),
        90,
        "still connected, data kept"
    );
    redis.engine.shutdown().await;
}

#[tokio::test]
async fn replace_data_counts_the_clients_it_cuts() {
    let redis = Instance::start().await;
    let mut first = redis.tenant().await;
    let mut second = redis.tenant().await;
    cmd(&mut first, &["SET", "k", "v"]).await;
    cmd(&mut second, &["PING"]).await;
    let rdb = redis.path("snap.rdb");
    redis
        .engine
        .snapshot(&redis.spec.binding_id, &rdb)
        .await
        .unwrap();
    let cut = redis.engine.replace_data(&redis.spec, &rdb).await.unwrap();
    assert_eq!(cut, 2);
    assert!(first.call(&["PING"]).await.is_err(), "cut");
    assert!(second.call(&["PING"]).await.is_err(), "cut");
    let mut conn = redis.tenant().await;
    assert_eq!(
        cmd(&mut conn, &["GET", "k"]).await,
        Reply::Bulk(Some(b"v".to_vec()))
    );
    redis.engine.shutdown().await;
}

/// Why a snapshot pauses writes instead of using MULTI: redis 7.0 does not
/// fork inside EXEC, it schedules the save for later (after other writes).
#[tokio::test]
async fn bgsave_inside_multi_is_only_scheduled() {
    let redis = Instance::start().await;
    let mut admin = Resp::login(
        "127.0.0.1",
        redis.spec.port,
        mds_engines::redis_backup::ADMIN_USER,
        &redis.spec.admin_password,
    )
    .await
    .unwrap();
    cmd(&mut admin, &["MULTI"]).await;
    cmd(&mut admin, &["BGSAVE"]).await;
    let Reply::Array(Some(replies)) = cmd(&mut admin, &["EXEC"]).await else {
        panic!("EXEC")
    };
    assert_eq!(
        replies,
        vec![Reply::Simple("Background saving scheduled".to_string())]
    );
    // The tenant may not save, nor read the admin's commands.
    let mut tenant = redis.tenant().await;
    assert!(
        matches!(tenant.call(&["BGSAVE"]).await.unwrap(), Reply::Error(e) if e.starts_with("NOPERM"))
    );
    redis.engine.shutdown().await;
}

/// Timings on a larger instance (about 100 MB): run with
/// `cargo test -p mds-engines --test redis_backup -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn measure_a_large_instance() {
    let mut redis = Instance::start().await;
    redis.spec.maxmemory_bytes = 1 << 30;
    redis.engine.ensure_running(&redis.spec).await.unwrap();
    let mut conn = redis.tenant().await;
    let keys = 200_000;
    for batch in 0..keys / 1000 {
        // Random values: an RDB compresses repeated ones to nothing.
        let pairs: Vec<(String, String)> = (0..1000)
            .map(|i| {
                let value = mds_crypto::random_password(400).to_string();
                (format!("key:{batch}:{i}"), value)
            })
            .collect();
        let mut args = vec!["MSET"];
        for (name, value) in &pairs {
            args.push(name);
            args.push(value);
        }
        cmd(&mut conn, &args).await;
    }
    // A writer measures how long its writes wait during the snapshot.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writer_conn = redis.tenant().await;
    let writer_stop = stop.clone();
    let writer = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        let mut n = 0u64;
        while !writer_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let start = std::time::Instant::now();
            cmd(&mut writer_conn, &["SET", &format!("w:{}", n % 100), "x"]).await;
            worst = worst.max(start.elapsed());
            n += 1;
        }
        (worst, n)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rdb = redis.path("big.rdb");
    let start = std::time::Instant::now();
    let record = redis
        .engine
        .snapshot(&redis.spec.binding_id, &rdb)
        .await
        .unwrap();
    let snapshot = start.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, writes) = writer.await.unwrap();
    let start = std::time::Instant::now();
    redis.probe(&rdb, &record).await.unwrap();
    let probe = start.elapsed();
    let start = std::time::Instant::now();
    let cut = redis.engine.replace_data(&redis.spec, &rdb).await.unwrap();
    let replace = start.elapsed();
    println!(
        "{} keys, RDB {} MB: snapshot {snapshot:?} (slowest of {writes} writes meanwhile: \
         {worst:?}), probe {probe:?}, replace_data {replace:?} ({cut} clients cut)",
        record.keys,
        std::fs::metadata(&rdb).unwrap().len() >> 20
    );
    redis.engine.shutdown().await;
}

/// New data that does not come up is set aside and the old put back. (Here
/// it cannot start because the engine has shut down: the quickest failure.)
#[tokio::test]
async fn a_swap_that_does_not_start_puts_the_old_data_back() {
    let redis = Instance::start().await;
    let mut conn = redis.tenant().await;
    cmd(&mut conn, &["SET", "n", "1"]).await;
    let rdb = redis.path("snap.rdb");
    redis
        .engine
        .snapshot(&redis.spec.binding_id, &rdb)
        .await
        .unwrap();
    cmd(&mut conn, &["SET", "n", "2"]).await;
    redis.engine.shutdown().await;

    let err = redis
        .engine
        .replace_data(&redis.spec, &rdb)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the old data is back"), "{err}");
    let dir = redis.engine.instance_dir(&redis.spec.binding_id);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("replaced-")),
        "{names:?}"
    );
    let failed = names.iter().find(|n| n.starts_with("failed-")).unwrap();
    assert!(dir.join(failed).join("appendonlydir").is_dir());

    let engine = RedisEngine::new(
        redis.binary.clone(),
        redis.path("redis"),
        redis.os_user.clone(),
    )
    .unwrap();
    engine.ensure_running(&redis.spec).await.unwrap();
    let mut conn = redis.tenant().await;
    assert_eq!(
        cmd(&mut conn, &["GET", "n"]).await,
        Reply::Bulk(Some(b"2".to_vec()))
    );
    engine.shutdown().await;
}
