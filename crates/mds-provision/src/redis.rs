//! The Redis provisioner: a supervised redis-server of the binding's own
//! (managed), or an ACL user on an existing server (`--redis-url`, see
//! `redis_external.rs`).

use mds_core::env::RedisAccess;
use mds_core::kinds::{BindingState, Desired};
use mds_core::names;
use mds_engines::redis_backup::RedisRecord;
use mds_engines::{RedisEngine, RedisSpec};
use mds_store::{BindingRow, DataServiceRow};

use crate::redis_external::key_prefix;
use crate::{Ctx, Injected, Metrics, ProvisionError, Provisioner, RedisHosting};

/// A Redis without a size gets 64 MiB.
pub const DEFAULT_REDIS_MEMORY: u64 = 64 * 1024 * 1024;

impl RedisHosting {
    fn managed(&self) -> Result<&RedisEngine, ProvisionError> {
        match self {
            RedisHosting::Managed(engine) => Ok(engine),
            RedisHosting::External(_) | RedisHosting::Unavailable => Err(ProvisionError::Process(
                "redis-server is not installed on this server; install it with \
                     `apt-get install -y redis-server`"
                    .to_string(),
            )),
        }
    }

    /// Makes the binding's own redis-server run (as its row says) and
    /// returns once its user can AUTH and PING.
    async fn ensure_running(
        redis: &RedisEngine,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<RedisSpec, ProvisionError> {
        let spec = spec(ctx, service, binding).await?;
        match redis.ensure_running(&spec).await {
            // The port it kept was taken meanwhile (by any process of the
            // host): it moves to a free one; its URL follows at next boot.
            Err(mds_engines::EngineError::NotReady { tail, .. })
                if tail.contains("Address already in use") =>
            {
                let port = mds_engines::free_port()?;
                tracing::warn!(
                    binding = binding.id,
                    old = spec.port,
                    new = port,
                    "the Redis port was taken; moving"
                );
                ctx.store
                    .set_binding_port(&binding.id, i32::from(port))
                    .await?;
                let moved = RedisSpec { port, ..spec };
                redis.ensure_running(&moved).await?;
                return Ok(moved);
            }
            other => other?,
        }
        Ok(spec)
    }
}

/// How the binding's own redis-server runs, from its rows (a port is
/// chosen and kept on first use).
async fn spec(
    ctx: &Ctx,
    service: &DataServiceRow,
    binding: &BindingRow,
) -> Result<RedisSpec, ProvisionError> {
    let port = match binding.port {
        Some(port) => port as u16,
        None => {
            let port = mds_engines::free_port()?;
            ctx.store
                .set_binding_port(&binding.id, i32::from(port))
                .await?;
            port
        }
    };
    Ok(RedisSpec {
        binding_id: binding.id.clone(),
        port,
        user: login_user(binding),
        password: ctx.password(binding)?.to_string(),
        also: other_logins(ctx, binding)?,
        admin_password: admin_password(ctx, &binding.id),
        maxmemory_bytes: service.config["maxmemory_bytes"]
            .as_u64()
            .unwrap_or(DEFAULT_REDIS_MEMORY),
        eviction: service.config["eviction"]
            .as_str()
            .unwrap_or("noeviction")
            .to_string(),
    })
}

/// Restore points of managed Redis bindings (the engine side is
/// `mds_engines::redis_backup`).
impl crate::Reconciler {
    /// Whether Redis bindings are this server's own redis-servers.
    pub fn redis_is_managed(&self) -> bool {
        matches!(self.inner.redis, RedisHosting::Managed(_))
    }

    /// A consistent RDB of the binding's instance in `dest`, and what it
    /// holds.
    pub async fn redis_snapshot(
        &self,
        binding: &BindingRow,
        dest: &std::path::Path,
    ) -> Result<RedisRecord, ProvisionError> {
        Ok(self
            .inner
            .redis
            .managed()?
            .snapshot(&binding.id, dest)
            .await?)
    }

    /// Loads `rdb` in a scratch server and compares it with `expect`.
    pub async fn redis_probe(
        &self,
        rdb: &std::path::Path,
        scratch: &std::path::Path,
        expect: &RedisRecord,
    ) -> Result<(), ProvisionError> {
        Ok(self
            .inner
            .redis
            .managed()?
            .probe_rdb(rdb, scratch, expect)
            .await?)
    }

    /// The binding's instance then holds exactly `rdb`'s data, same
    /// credentials; returns the clients it cut. The data it replaced is
    /// deleted once the new data runs (a restore point holds it).
    pub async fn redis_replace(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
        rdb: &std::path::Path,
    ) -> Result<u64, ProvisionError> {
        let redis = self.inner.redis.managed()?;
        let spec = spec(&self.inner.ctx, service, binding).await?;
        let cut = redis.replace_data(&spec, rdb).await?;
        let dir = redis.instance_dir(&binding.id);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with("replaced-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(cut)
    }
}

/// The ACL user a binding's clients log in as now: like Postgres, the
/// binding's resource name, then two users that take turns with each
/// rotation (see `mds_core::names::login_role`).
fn login_user(binding: &BindingRow) -> String {
    names::login_role(&binding.resource_name, binding.credential_generation)
}

/// A binding's logins besides the current one: a rotation's next one, or
/// the replaced one in its grace period.
fn other_logins(ctx: &Ctx, binding: &BindingRow) -> Result<Vec<(String, String)>, ProvisionError> {
    let generation = binding.credential_generation;
    [
        (&binding.previous_sealed_password, generation - 1),
        (&binding.pending_sealed_password, generation + 1),
    ]
    .into_iter()
    .filter_map(|(sealed, generation)| Some((sealed.as_ref()?, generation)))
    .map(|(sealed, generation)| {
        Ok((
            names::login_role(&binding.resource_name, generation),
            ctx.open_password(binding, sealed)?.to_string(),
        ))
    })
    .collect()
}

/// The password of mds's own admin user on a binding's redis-server: derived,
/// so that nothing needs storing, and never the tenant's.
fn admin_password(ctx: &Ctx, binding_id: &str) -> String {
    hex::encode(*ctx.master_key.derive(&format!("redis admin {binding_id}")))
}

impl Provisioner for RedisHosting {
    /// Runs (or stops, or removes) the binding's own redis-server, or its
    /// ACL user on an external Redis.
    async fn converge(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
        desired: Desired,
    ) -> Result<Option<BindingState>, ProvisionError> {
        if let RedisHosting::External(external) = self {
            let mut logins = vec![(login_user(binding), ctx.password(binding)?.to_string())];
            logins.extend(other_logins(ctx, binding)?);
            return external
                .converge(&binding.resource_name, &logins, desired)
                .await
                .map_err(ProvisionError::Process);
        }
        let redis = self.managed()?;
        match desired {
            Desired::Deleted => {
                redis.remove(&binding.id).await?;
                Ok(None)
            }
            Desired::Stopped => {
                redis.stop(&binding.id).await;
                Ok(Some(BindingState::Stopped))
            }
            Desired::Running => {
                let spec = Self::ensure_running(redis, ctx, service, binding).await?;
                // Ready means AUTH and PING with each of the binding's
                // logins (a rotation's two).
                for (user, password) in spec.logins() {
                    mds_engines::resp::auth_ping("127.0.0.1", spec.port, user, password)
                        .await
                        .map_err(ProvisionError::Process)?;
                }
                Ok(Some(BindingState::Running))
            }
        }
    }

    /// Drops the data now; an external user goes without its password
    /// being opened.
    async fn remove_now(
        &self,
        _ctx: &Ctx,
        _service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<(), ProvisionError> {
        match self {
            RedisHosting::External(external) => external
                .converge(&binding.resource_name, &[], Desired::Deleted)
                .await
                .map(|_| ())
                .map_err(ProvisionError::Process),
            RedisHosting::Managed(_) | RedisHosting::Unavailable => {
                Ok(self.managed()?.remove(&binding.id).await?)
            }
        }
    }

    /// Managed: the instance restarts (its data stays); external: the
    /// user's connections close.
    async fn restart(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
        desired: Desired,
    ) -> Result<(), ProvisionError> {
        if let RedisHosting::External(external) = self {
            return external
                .disconnect(&login_user(binding))
                .await
                .map_err(ProvisionError::Process);
        }
        self.managed()?.stop(&binding.id).await;
        self.converge(ctx, service, binding, desired).await?;
        Ok(())
    }

    fn endpoint(&self, binding: &BindingRow) -> (String, u16) {
        match self {
            RedisHosting::External(external) => (external.host.clone(), external.port),
            RedisHosting::Managed(_) | RedisHosting::Unavailable => (
                "127.0.0.1".to_string(),
                binding.port.unwrap_or_default() as u16,
            ),
        }
    }

    fn variables(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Vec<Injected>, ProvisionError> {
        let password = ctx.password(binding)?;
        let (host, port) = self.endpoint(binding);
        // On a shared server each binding owns a key prefix.
        let prefix = match self {
            RedisHosting::External(_) => Some(key_prefix(&binding.resource_name)),
            RedisHosting::Managed(_) | RedisHosting::Unavailable => None,
        };
        Ok(RedisAccess {
            host: &host,
            port,
            user: &login_user(binding),
            password: &password,
            key_prefix: prefix.as_deref(),
        }
        .variables(&service.env_prefix))
    }

    /// From `INFO`, logged in as the binding's own user: memory, clients,
    /// keys and command counters of its own redis-server. On a shared
    /// external server those numbers would be everyone's: none.
    async fn metrics(
        &self,
        ctx: &Ctx,
        _service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Metrics, ProvisionError> {
        if !matches!(self, RedisHosting::Managed(_)) {
            return Ok(Vec::new());
        }
        let password = ctx.password(binding)?;
        let (host, port) = self.endpoint(binding);
        let info = mds_engines::resp::auth_info(&host, port, &login_user(binding), &password)
            .await
            .map_err(ProvisionError::Process)?;
        Ok(info_metrics(&info))
    }

    async fn check(
        &self,
        ctx: &Ctx,
        _service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<(), String> {
        let password = ctx.password(binding).map_err(|e| e.to_string())?;
        let (host, port) = self.endpoint(binding);
        mds_engines::resp::auth_ping(&host, port, &login_user(binding), &password).await
    }
}

/// The numbers a binding's `INFO` answer reports, by our names; keys are
/// summed over its databases (`db0:keys=3,expires=0,...`).
fn info_metrics(info: &str) -> Metrics {
    const FIELDS: &[(&str, &str)] = &[
        ("used_memory", "used_memory_bytes"),
        ("maxmemory", "maxmemory_bytes"),
        ("connected_clients", "connections"),
        ("total_commands_processed", "commands_processed"),
        ("keyspace_hits", "keyspace_hits"),
        ("keyspace_misses", "keyspace_misses"),
        ("evicted_keys", "evicted_keys"),
    ];
    let mut out = Vec::new();
    let mut keys = 0.0;
    for line in info.lines() {
        let Some((field, value)) = line.trim_end().split_once(':') else {
            continue;
        };
        if let Some((_, name)) = FIELDS.iter().find(|(f, _)| *f == field) {
            if let Ok(v) = value.parse::<f64>() {
                out.push((*name, v));
            }
        } else if field.starts_with("db") {
            keys += value
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    out.push(("keys", keys));
    out
}

#[cfg(test)]
mod metrics_tests {
    use super::info_metrics;

    #[test]
    fn info_fields_and_keys_over_databases() {
        let info = "# Memory\r\nused_memory:1024\r\nmaxmemory:0\r\n# Clients\r\n\
                    connected_clients:2\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n\
                    db1:keys=4,expires=1,avg_ttl=0\r\nredis_version:7.0.15\r\n";
        let m = info_metrics(info);
        assert!(m.contains(&("used_memory_bytes", 1024.0)));
        assert!(m.contains(&("connections", 2.0)));
        assert!(m.contains(&("keys", 7.0)));
        assert!(!m.iter().any(|(n, _)| *n == "redis_version"));
    }
}
