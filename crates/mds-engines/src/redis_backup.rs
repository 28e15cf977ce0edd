//! Backups of a managed Redis: a consistent snapshot (an RDB file plus a
//! record of what it holds), the check of an RDB in a scratch server, and
//! the swap of an instance's data for an RDB's.
//!
//! Consistency: `BGSAVE` inside `MULTI` does not fork there: redis 7.0
//! answers "Background saving scheduled" and forks at its next cron tick,
//! after other clients' writes. So a snapshot freezes writes instead:
//! `CLIENT PAUSE <ms> WRITE` (which also stops expiry and eviction), then
//! `INFO keyspace`, the samples' `DUMP`s and `BGSAVE`, which forks before it
//! answers "started", then `CLIENT UNPAUSE`. Tenants' writes wait for a few
//! milliseconds; their reads go on.
//!
//! Keys with a TTL: an RDB keeps a key whose time has passed, and a master
//! drops it when it loads the file; redis counts those
//! (`rdb_last_load_keys_expired`), so the check compares loaded + expired
//! with the record's count, and a sample whose recorded expiry has passed
//! may be gone.
//!
//! The swap: with `appendonly yes` and no `appendonlydir`, redis 7.0 starts
//! empty and ignores `dump.rdb`. So the RDB becomes the base file of a new
//! multi-part AOF (`appendonlydir/appendonly.aof.1.base.rdb` and a manifest
//! naming it), which redis loads as the AOF and then appends to.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::process::{Child, Command};

use crate::process::tail;
pub use crate::redis::ADMIN_USER;
use crate::redis::{free_port, RedisEngine, RedisSpec};
use crate::resp::{info_field, Reply, Resp};
use crate::{EngineError, OsUser};

/// At most this many sampled keys per record.
pub const MAX_SAMPLES: usize = 32;
/// A key whose value takes more memory is not sampled: the record is kept
/// in a manifest, and the samples are read while writes wait.
const MAX_SAMPLE_BYTES: i64 = 64 * 1024;
/// Writes wait at most this long if mds dies while it pauses them.
const PAUSE_MS: &str = "5000";
/// Tries to fork while another child (an AOF rewrite) runs.
const FORK_TRIES: u32 = 50;
const SAVE_TIMEOUT: Duration = Duration::from_secs(600);
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// The AOF layout of redis 7 with the default `appenddirname` and
/// `appendfilename` (which `write_config` keeps).
const AOF_DIR: &str = "appendonlydir";
const AOF_BASE: &str = "appendonly.aof.1.base.rdb";
const AOF_MANIFEST: &str = "appendonly.aof.manifest";
const RDB_FILE: &str = "dump.rdb";

/// What an RDB held when it was taken. In JSON, keys and dumps are hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisRecord {
    /// Keys over all databases, those whose TTL had passed but which redis
    /// had not yet removed included (the RDB holds them).
    pub keys: u64,
    /// Up to [`MAX_SAMPLES`] random keys, spread over the databases.
    pub samples: Vec<RedisSample>,
}

/// One key as it was in the RDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisSample {
    pub db: u32,
    #[serde(with = "hex_bytes")]
    pub key: Vec<u8>,
    /// Its `DUMP` serialization (the value, not the TTL).
    #[serde(with = "hex_bytes")]
    pub dump: Vec<u8>,
    /// Its `PEXPIRETIME` (Unix milliseconds), if it has a TTL.
    pub expires_at_ms: Option<i64>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

impl RedisEngine {
    /// Writes a consistent RDB of the running instance to `dest` (fsynced)
    /// and returns what it holds: the key count and samples describe the
    /// RDB exactly, even while clients write.
    pub async fn snapshot(
        &self,
        binding_id: &str,
        dest: &Path,
    ) -> Result<RedisRecord, EngineError> {
        let _op = self.lock_instance(binding_id).await;
        let spec = self.running_spec(binding_id).await?;
        let mut conn = admin_login(&spec).await?;
        let candidates = pick_samples(&mut conn).await?;
        let (record, saves) = freeze_and_fork(&mut conn, &candidates).await?;
        wait_for_save(&mut conn, saves).await?;
        let rdb = rdb_path(&mut conn).await?;
        copy_synced(&rdb, dest).await?;
        // With `save ""` only mds saves, under this lock; a save that
        // slipped in anyway would have replaced the file mid-copy.
        let now = persistence_number(&mut conn, "rdb_saves").await?;
        if now != saves + 1 {
            return Err(EngineError::Other(format!(
                "another RDB save of {binding_id} ran during the copy; take the snapshot again"
            )));
        }
        Ok(record)
    }

    /// Makes the instance hold exactly `rdb`'s data, with `spec`'s
    /// credentials, running (even if it was stopped), and returns how many
    /// clients it disconnected (tenants', not mds's). An RDB that does not
    /// load in a scratch server is refused before anything stops. The data
    /// it held is moved to `<dir>/replaced-<unix ms>/` (for the caller to
    /// delete); if the new data does not come up, the old is put back and
    /// the new kept in `<dir>/failed-<unix ms>/`.
    pub async fn replace_data(&self, spec: &RedisSpec, rdb: &Path) -> Result<u64, EngineError> {
        let _op = self.lock_instance(&spec.binding_id).await;
        let dir = self.dir(&spec.binding_id);
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        // A file that does not load is refused before anything stops.
        Scratch::start(
            self.binary(),
            self.os_user(),
            rdb,
            &dir.join(format!("check-{stamp}")),
        )
        .await?
        .stop()
        .await?;

        let clients = match admin_login(spec).await {
            Ok(mut conn) => tenant_clients(&mut conn).await?,
            Err(e) => {
                tracing::warn!(binding = %spec.binding_id, error = %e, "no clients counted");
                0
            }
        };
        self.stop_locked(&spec.binding_id).await;

        let aside = dir.join(format!("replaced-{stamp}"));
        fs::create_dir(&aside).map_err(EngineError::io(format!("create {}", aside.display())))?;
        move_data(&dir, &aside)?;
        let started = match install_as_aof(rdb, &dir, self.os_user()).await {
            Ok(()) => self.ensure_running_locked(spec).await,
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            self.stop_locked(&spec.binding_id).await;
            // The failed data goes aside too: nothing is deleted here.
            let failed = dir.join(format!("failed-{stamp}"));
            fs::create_dir(&failed)
                .map_err(EngineError::io(format!("create {}", failed.display())))?;
            move_data(&dir, &failed)?;
            move_data(&aside, &dir)?;
            let _ = fs::remove_dir(&aside);
            let old = match self.ensure_running_locked(spec).await {
                Ok(()) => "the old data is back and runs".to_string(),
                Err(restart) => format!("the old data is back but did not start ({restart})"),
            };
            return Err(EngineError::Other(format!(
                "the new data of {} did not start ({e}); {old}; the new is in {}",
                spec.binding_id,
                failed.display()
            )));
        }
        Ok(clients)
    }

    /// [`probe_rdb`] with this engine's redis-server and OS user.
    pub async fn probe_rdb(
        &self,
        rdb: &Path,
        scratch_dir: &Path,
        expect: &RedisRecord,
    ) -> Result<(), EngineError> {
        probe_rdb(self.binary(), self.os_user(), rdb, scratch_dir, expect).await
    }

    /// Where an instance keeps its files, and [`RedisEngine::replace_data`]
    /// the data it replaced (`replaced-<unix ms>/`).
    pub fn instance_dir(&self, binding_id: &str) -> PathBuf {
        self.dir(binding_id)
    }
}

/// Starts a scratch redis-server on `rdb` (loopback, a free port, no AOF,
/// in `scratch_dir`, which must not exist or be empty), and checks that it
/// holds what `expect` says; then stops it and removes `scratch_dir`.
pub async fn probe_rdb(
    binary: &Path,
    os_user: Option<&OsUser>,
    rdb: &Path,
    scratch_dir: &Path,
    expect: &RedisRecord,
) -> Result<(), EngineError> {
    let mut scratch = Scratch::start(binary, os_user, rdb, scratch_dir).await?;
    let compared = compare(&mut scratch.conn, expect).await;
    let stopped = scratch.stop().await;
    compared.and(stopped)
}

async fn admin_login(spec: &RedisSpec) -> Result<Resp, EngineError> {
    Resp::login("127.0.0.1", spec.port, ADMIN_USER, &spec.admin_password)
        .await
        .map_err(|e| redis_error(&spec.binding_id, "log in as mds-admin", e))
}

fn redis_error(what: &str, doing: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Other(format!("redis {what}: {doing}: {e}"))
}

async fn call(conn: &mut Resp, args: &[&[u8]]) -> Result<Reply, EngineError> {
    let name = String::from_utf8_lossy(args.first().copied().unwrap_or_default()).into_owned();
    conn.call_bytes(args)
        .await
        .map_err(|e| redis_error(&name, "connection", e))?
        .ok()
        .map_err(|e| redis_error(&name, "refused", e))
}

async fn info(conn: &mut Resp, section: &str) -> Result<String, EngineError> {
    conn.info(Some(section))
        .await
        .map_err(|e| redis_error("INFO", section, e))
}

/// A number of `INFO persistence`.
async fn persistence_number(conn: &mut Resp, field: &str) -> Result<u64, EngineError> {
    let text = info(conn, "persistence").await?;
    info_field(&text, field)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| redis_error("INFO persistence", "read", format!("no number {field}")))
}

/// `(db, keys)` of every database with keys (`db3:keys=5,expires=0,...`).
fn keyspace(info: &str) -> Vec<(u32, u64)> {
    info.lines()
        .filter_map(|line| {
            let (db, rest) = line.trim_end().split_once(':')?;
            let db = db.strip_prefix("db")?.parse().ok()?;
            let keys = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((db, keys))
        })
        .collect()
}

async fn select(conn: &mut Resp, db: u32) -> Result<(), EngineError> {
    call(conn, &[b"SELECT", db.to_string().as_bytes()]).await?;
    Ok(())
}

/// Random keys to sample, spread over the databases, small ones only.
/// Chosen before writes pause, so that the pause stays short.
async fn pick_samples(conn: &mut Resp) -> Result<Vec<(u32, Vec<u8>)>, EngineError> {
    let dbs = keyspace(&info(conn, "keyspace").await?);
    let mut picked: Vec<(u32, Vec<u8>)> = Vec::new();
    for (i, (db, keys)) in dbs.iter().enumerate() {
        // What the databases before this one left of the budget, shared
        // among this and the ones after it.
        let quota = (MAX_SAMPLES - picked.len()).div_ceil(dbs.len() - i);
        let quota = quota.min(usize::try_from(*keys).unwrap_or(usize::MAX));
        select(conn, *db).await?;
        let mut mine: Vec<Vec<u8>> = Vec::new();
        for _ in 0..quota * 3 {
            if mine.len() == quota {
                break;
            }
            let Reply::Bulk(Some(key)) = call(conn, &[b"RANDOMKEY"]).await? else {
                break;
            };
            if mine.contains(&key) {
                continue;
            }
            let size = call(conn, &[b"MEMORY", b"USAGE", &key]).await?;
            if matches!(size, Reply::Integer(n) if n <= MAX_SAMPLE_BYTES) {
                mine.push(key);
            }
        }
        picked.extend(mine.into_iter().map(|key| (*db, key)));
    }
    Ok(picked)
}

/// Pauses writes, records the key count and samples, forks the RDB save and
/// lets writes go on: the record and the RDB are of one moment. Returns
/// the record and `rdb_saves` before this save.
async fn freeze_and_fork(
    conn: &mut Resp,
    candidates: &[(u32, Vec<u8>)],
) -> Result<(RedisRecord, u64), EngineError> {
    for _ in 0..FORK_TRIES {
        wait_no_child(conn).await?;
        let saves = persistence_number(conn, "rdb_saves").await?;
        let paused_at = Instant::now();
        call(conn, &[b"CLIENT", b"PAUSE", PAUSE_MS.as_bytes(), b"WRITE"]).await?;
        let frozen = frozen(conn, candidates).await;
        let unpaused = call(conn, &[b"CLIENT", b"UNPAUSE"]).await;
        tracing::debug!(paused = ?paused_at.elapsed(), "redis snapshot: writes waited");
        if let Some(record) = frozen? {
            unpaused?;
            return Ok((record, saves));
        }
        unpaused?;
        // Another child (an AOF rewrite) started in between: wait for it.
    }
    Err(EngineError::Other(
        "redis kept running other background saves; no snapshot was taken".to_string(),
    ))
}

/// The paused part: `None` if BGSAVE could not fork now.
async fn frozen(
    conn: &mut Resp,
    candidates: &[(u32, Vec<u8>)],
) -> Result<Option<RedisRecord>, EngineError> {
    let keys = keyspace(&info(conn, "keyspace").await?)
        .iter()
        .map(|(_, n)| n)
        .sum();
    let mut samples = Vec::new();
    for (db, key) in candidates {
        select(conn, *db).await?;
        // Gone, or its TTL has passed (writes are paused, expiry too, so
        // redis still counts it but will not serve it): not a sample. The
        // TTL first: a key that expires between the two has no DUMP.
        let Some(expires_at_ms) = expire_time(conn, key).await? else {
            continue;
        };
        let Reply::Bulk(Some(dump)) = call(conn, &[b"DUMP", key]).await? else {
            continue;
        };
        samples.push(RedisSample {
            db: *db,
            key: key.clone(),
            dump,
            expires_at_ms,
        });
    }
    match conn.call_bytes(&[b"BGSAVE"]).await {
        Ok(Reply::Simple(s)) if s.starts_with("Background saving started") => {
            Ok(Some(RedisRecord { keys, samples }))
        }
        // "Another child process is active" or "already in progress".
        Ok(Reply::Error(e)) if e.contains("child") || e.contains("in progress") => Ok(None),
        Ok(other) => Err(redis_error(
            "BGSAVE",
            "unexpected reply",
            format!("{other:?}"),
        )),
        Err(e) => Err(redis_error("BGSAVE", "connection", e)),
    }
}

/// Waits until no background save or AOF rewrite runs.
async fn wait_no_child(conn: &mut Resp) -> Result<(), EngineError> {
    let start = Instant::now();
    loop {
        let text = info(conn, "persistence").await?;
        let busy = |field| info_field(&text, field).is_some_and(|v| v != "0");
        if !busy("rdb_bgsave_in_progress") && !busy("aof_rewrite_in_progress") {
            return Ok(());
        }
        if start.elapsed() > SAVE_TIMEOUT {
            return Err(EngineError::Other(format!(
                "redis was still saving after {} s",
                SAVE_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits for the save that started after `saves` saves to finish well.
/// Nothing else can fork while it runs, so the first end seen is its end.
async fn wait_for_save(conn: &mut Resp, saves: u64) -> Result<(), EngineError> {
    wait_no_child(conn).await?;
    let text = info(conn, "persistence").await?;
    let status = info_field(&text, "rdb_last_bgsave_status").unwrap_or("?");
    let count: Option<u64> = info_field(&text, "rdb_saves").and_then(|v| v.parse().ok());
    if status != "ok" || count != Some(saves + 1) {
        return Err(EngineError::Other(format!(
            "the RDB save failed (rdb_last_bgsave_status:{status}); see the instance's redis.log"
        )));
    }
    Ok(())
}

/// Where the instance writes its RDB (`dir`/`dbfilename`).
async fn rdb_path(conn: &mut Resp) -> Result<PathBuf, EngineError> {
    let dir = config_get(conn, "dir").await?;
    let file = config_get(conn, "dbfilename").await?;
    Ok(Path::new(&dir).join(file))
}

async fn config_get(conn: &mut Resp, name: &str) -> Result<String, EngineError> {
    match call(conn, &[b"CONFIG", b"GET", name.as_bytes()]).await? {
        Reply::Array(Some(items)) => match items.get(1) {
            Some(Reply::Bulk(Some(v))) => Ok(String::from_utf8_lossy(v).into_owned()),
            _ => Err(redis_error("CONFIG GET", "no value", name)),
        },
        other => Err(redis_error(
            "CONFIG GET",
            "unexpected reply",
            format!("{other:?}"),
        )),
    }
}

/// Copies `from` to `to` and fsyncs it and its directory.
async fn copy_synced(from: &Path, to: &Path) -> Result<(), EngineError> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let context = format!("copy {} to {}", from.display(), to.display());
        (|| {
            fs::copy(&from, &to)?;
            fs::File::open(&to)?.sync_all()?;
            if let Some(parent) = to.parent() {
                fs::File::open(parent)?.sync_all()?;
            }
            Ok(())
        })()
        .map_err(EngineError::io(context))
    })
    .await
    .map_err(|e| EngineError::Other(format!("the copy task failed: {e}")))?
}

/// Connected clients but mds's own (those of its admin user).
async fn tenant_clients(conn: &mut Resp) -> Result<u64, EngineError> {
    let Reply::Bulk(Some(list)) = call(conn, &[b"CLIENT", b"LIST"]).await? else {
        return Err(redis_error("CLIENT LIST", "unexpected reply", "not a text"));
    };
    let admin = format!("user={ADMIN_USER}");
    Ok(String::from_utf8_lossy(&list)
        .lines()
        .filter(|line| !line.split(' ').any(|field| field == admin))
        .count() as u64)
}

/// Moves an instance's data (the RDB and the AOF directory) from `from` to
/// `to`, whichever of them exist.
fn move_data(from: &Path, to: &Path) -> Result<(), EngineError> {
    for name in [RDB_FILE, AOF_DIR] {
        let (src, dst) = (from.join(name), to.join(name));
        if src.exists() {
            fs::rename(&src, &dst).map_err(EngineError::io(format!(
                "move {} to {}",
                src.display(),
                dst.display()
            )))?;
        }
    }
    Ok(())
}

/// Makes `rdb` the base of a new AOF in `dir` (see the module's comment).
async fn install_as_aof(
    rdb: &Path,
    dir: &Path,
    os_user: Option<&OsUser>,
) -> Result<(), EngineError> {
    let aof = dir.join(AOF_DIR);
    fs::create_dir(&aof).map_err(EngineError::io(format!("create {}", aof.display())))?;
    copy_synced(rdb, &aof.join(AOF_BASE)).await?;
    let manifest = aof.join(AOF_MANIFEST);
    mds_crypto::write_secret_file(
        &manifest,
        format!("file {AOF_BASE} seq 1 type b\n").as_bytes(),
    )
    .map_err(EngineError::io(format!("write {}", manifest.display())))?;
    if let Some(user) = os_user {
        for path in [&aof, &aof.join(AOF_BASE), &manifest] {
            user.chown(path)?;
        }
    }
    Ok(())
}

/// What a loaded RDB holds, against the record of it.
async fn compare(conn: &mut Resp, expect: &RedisRecord) -> Result<(), EngineError> {
    let loaded = persistence_number(conn, "rdb_last_load_keys_loaded").await?;
    let expired = persistence_number(conn, "rdb_last_load_keys_expired").await?;
    if loaded + expired != expect.keys {
        return Err(EngineError::Other(format!(
            "key count {} ({loaded} loaded, {expired} expired), expected {}",
            loaded + expired,
            expect.keys
        )));
    }
    for sample in &expect.samples {
        let name = format!(
            "key {:?} of db {}",
            String::from_utf8_lossy(&sample.key),
            sample.db
        );
        select(conn, sample.db).await?;
        // As when it was taken: the TTL first.
        let expires = expire_time(conn, &sample.key).await?;
        let dump = call(conn, &[b"DUMP", &sample.key]).await?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        match dump {
            Reply::Bulk(Some(dump)) if dump == sample.dump => {}
            Reply::Bulk(Some(_)) => {
                if !same_value(conn, sample).await? {
                    return Err(EngineError::Other(format!("{name} differs")));
                }
            }
            _ if sample.expires_at_ms.is_some_and(|t| t <= now_ms) => continue,
            _ => return Err(EngineError::Other(format!("{name} is missing"))),
        }
        if let Some(expires) = expires.filter(|e| *e != sample.expires_at_ms) {
            return Err(EngineError::Other(format!(
                "{name} expires at {expires:?} (Unix ms), expected {:?}",
                sample.expires_at_ms
            )));
        }
    }
    Ok(())
}

/// A key's `PEXPIRETIME`: `None` if there is no such (live) key,
/// `Some(None)` if it has no TTL.
async fn expire_time(conn: &mut Resp, key: &[u8]) -> Result<Option<Option<i64>>, EngineError> {
    match call(conn, &[b"PEXPIRETIME", key]).await? {
        Reply::Integer(-2) => Ok(None),
        Reply::Integer(t) => Ok(Some((t >= 0).then_some(t))),
        other => Err(redis_error(
            "PEXPIRETIME",
            "unexpected reply",
            format!("{other:?}"),
        )),
    }
}

/// Whether the loaded key holds the value of the sample's dump. Its DUMP
/// bytes may differ with equal values: a set or hash kept as a hash table
/// is written in its table's order, which depends on the process's random
/// hash seed. So the dump is restored beside the key and both values'
/// order-independent digests (`DEBUG DIGEST-VALUE`, which the scratch
/// server allows) are compared.
async fn same_value(conn: &mut Resp, sample: &RedisSample) -> Result<bool, EngineError> {
    let mut probe = b"mds-probe:".to_vec();
    probe.extend_from_slice(mds_crypto::random_password(16).as_bytes());
    // A dump that does not restore (its checksum) is not this value.
    // The digest counts whether a key has a TTL (not its time).
    let ttl: &[u8] = match sample.expires_at_ms {
        Some(_) => b"86400000",
        None => b"0",
    };
    if call(conn, &[b"RESTORE", &probe, ttl, &sample.dump])
        .await
        .is_err()
    {
        return Ok(false);
    }
    let theirs = call(conn, &[b"DEBUG", b"DIGEST-VALUE", &sample.key]).await;
    let ours = call(conn, &[b"DEBUG", b"DIGEST-VALUE", &probe]).await;
    call(conn, &[b"DEL", &probe]).await?;
    Ok(theirs? == ours?)
}

/// A redis-server of mds's own on a copy of an RDB, reachable only with a
/// random password.
struct Scratch {
    child: Child,
    conn: Resp,
    dir: PathBuf,
}

impl Scratch {
    /// Starts it and returns once the RDB is loaded; an RDB that does not
    /// load is an error with the end of its log. Nothing is left behind on
    /// an error.
    async fn start(
        binary: &Path,
        os_user: Option<&OsUser>,
        rdb: &Path,
        dir: &Path,
    ) -> Result<Self, EngineError> {
        if fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
            return Err(EngineError::Other(format!(
                "the scratch dir {} is not empty",
                dir.display()
            )));
        }
        fs::create_dir_all(dir).map_err(EngineError::io(format!("create {}", dir.display())))?;
        let started = Self::launch(binary, os_user, rdb, dir).await;
        if started.is_err() {
            let _ = fs::remove_dir_all(dir);
        }
        started
    }

    async fn launch(
        binary: &Path,
        os_user: Option<&OsUser>,
        rdb: &Path,
        dir: &Path,
    ) -> Result<Self, EngineError> {
        copy_synced(rdb, &dir.join(RDB_FILE)).await?;
        let password = mds_crypto::random_password(32);
        let port = free_port()?;
        let config = format!(
            "bind 127.0.0.1\n\
             port {port}\n\
             protected-mode yes\n\
             daemonize no\n\
             dir {dir}\n\
             dbfilename {RDB_FILE}\n\
             logfile \"\"\n\
             appendonly no\n\
             save \"\"\n\
             enable-debug-command yes\n\
             user default off\n\
             user {ADMIN_USER} on #{hash} ~* &* +@all\n",
            dir = dir.display(),
            hash = hex::encode(Sha256::digest(password.as_bytes())),
        );
        let conf = dir.join("redis.conf");
        mds_crypto::write_secret_file(&conf, config.as_bytes())
            .map_err(EngineError::io(format!("write {}", conf.display())))?;
        let log_path = dir.join("redis.log");
        let log = fs::File::create(&log_path)
            .map_err(EngineError::io(format!("create {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(EngineError::io("duplicate the log handle"))?;
        if let Some(user) = os_user {
            for entry in fs::read_dir(dir)
                .map_err(EngineError::io("list the scratch dir"))?
                .flatten()
            {
                user.chown(&entry.path())?;
            }
            user.chown(dir)?;
            user.check_can_enter(dir)?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(EngineError::io(format!("chmod {}", dir.display())))?;

        let mut cmd = Command::new(binary);
        cmd.arg(&conf)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true);
        if let Some(user) = os_user {
            cmd.uid(user.uid).gid(user.gid);
        }
        let mut child = cmd
            .spawn()
            .map_err(EngineError::io("start a scratch redis-server"))?;
        let start = Instant::now();
        let failed = |why: String| {
            EngineError::Other(format!(
            "the RDB {} did not load in a scratch redis-server ({why}); the end of its log:\n{}",
            rdb.display(),
            tail(&log_path, 1500)
        ))
        };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(failed(format!("it exited: {status}")));
            }
            // LOADING while it reads the file; a refused connection before.
            if let Ok(mut conn) = Resp::login("127.0.0.1", port, ADMIN_USER, &password).await {
                if let Ok(Reply::Simple(pong)) = conn.call(&["PING"]).await {
                    if pong == "PONG" {
                        return Ok(Self {
                            child,
                            conn,
                            dir: dir.to_path_buf(),
                        });
                    }
                }
            }
            if start.elapsed() > LOAD_TIMEOUT {
                let _ = child.kill().await;
                return Err(failed(format!(
                    "not loaded after {} s",
                    LOAD_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the server and removes its directory.
    async fn stop(mut self) -> Result<(), EngineError> {
        // The server exits without answering.
        let _ = self.conn.call(&["SHUTDOWN", "NOSAVE"]).await;
        if !matches!(
            tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await,
            Ok(Ok(_))
        ) {
            let _ = self.child.kill().await;
        }
        fs::remove_dir_all(&self.dir)
            .map_err(EngineError::io(format!("remove {}", self.dir.display())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn keyspace_lines() {
        let info =
            "# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb12:keys=4,expires=1,avg_ttl=9\r\n";
        assert_eq!(keyspace(info), vec![(0, 3), (12, 4)]);
        assert_eq!(keyspace("# Keyspace\r\n"), vec![]);
    }

    #[test]
    fn record_json_is_hex() {
        let record = RedisRecord {
            keys: 1,
            samples: vec![RedisSample {
                db: 2,
                key: b"k\xff".to_vec(),
                dump: vec![0, 1],
                expires_at_ms: None,
            }],
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"key\":\"6bff\""), "{json}");
        assert_eq!(serde_json::from_str::<RedisRecord>(&json).unwrap(), record);
    }
}
