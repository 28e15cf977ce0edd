//! The Redis provisioner: a supervised redis-server of the binding's own
//! (managed), or an ACL user on an existing server (`--redis-url`, see
//! `redis_external.rs`).

use mds_core::env::RedisAccess;
use mds_core::kinds::{BindingState, Desired};
use mds_engines::{RedisEngine, RedisSpec};
use mds_store::{BindingRow, DataServiceRow};

use crate::redis_external::key_prefix;
use crate::{Ctx, Injected, ProvisionError, Provisioner, RedisHosting};

/// A Redis without a size gets 64 MiB.
pub const DEFAULT_REDIS_MEMORY: u64 = 64 * 1024 * 1024;

impl RedisHosting {
    fn managed(&self) -> Result<&RedisEngine, ProvisionError> {
        match self {
            RedisHosting::Managed(engine) => Ok(engine),
            RedisHosting::External(_) | RedisHosting::Unavailable => Err(ProvisionError::Redis(
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
    ) -> Result<(), ProvisionError> {
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
        let spec = RedisSpec {
            binding_id: binding.id.clone(),
            port,
            user: binding.resource_name.clone(),
            password: ctx.password(binding)?.to_string(),
            maxmemory_bytes: service.config["maxmemory_bytes"]
                .as_u64()
                .unwrap_or(DEFAULT_REDIS_MEMORY),
            eviction: service.config["eviction"]
                .as_str()
                .unwrap_or("noeviction")
                .to_string(),
        };
        // Ready means AUTH and PING with the binding's own user.
        redis.ensure_running(&spec).await?;
        Ok(())
    }
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
            let password = ctx.password(binding)?;
            return external
                .converge(&binding.resource_name, &password, desired)
                .await
                .map_err(ProvisionError::Redis);
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
                Self::ensure_running(redis, ctx, service, binding).await?;
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
                .converge(&binding.resource_name, "", Desired::Deleted)
                .await
                .map(|_| ())
                .map_err(ProvisionError::Redis),
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
                .disconnect(&binding.resource_name)
                .await
                .map_err(ProvisionError::Redis);
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
            user: &binding.resource_name,
            password: &password,
            key_prefix: prefix.as_deref(),
        }
        .variables(&service.env_prefix))
    }

    async fn check(
        &self,
        ctx: &Ctx,
        _service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<(), String> {
        let password = ctx.password(binding).map_err(|e| e.to_string())?;
        let (host, port) = self.endpoint(binding);
        mds_engines::resp::auth_ping(&host, port, &binding.resource_name, &password).await
    }
}
