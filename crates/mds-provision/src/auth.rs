//! The Auth provisioner: a realm of end users per binding, served by the
//! API at `AUTH_URL`. Its users, sessions and mail go with the binding row
//! (cascade); provisioning makes its ES256 signing keys.

use mds_core::env::AuthAccess;
use mds_core::kinds::{BindingState, Desired};
use mds_crypto::MasterKey;
use mds_store::{BindingRow, DataServiceRow};
use zeroize::Zeroizing;

use crate::{url_host_port, Ctx, Injected, ProvisionError, Provisioner};

pub(crate) struct AuthProvisioner {
    /// The API's public URL, under which auth bindings serve.
    pub api_url: String,
}

impl AuthProvisioner {
    /// `AUTH_URL`, also the issuer of the realm's tokens.
    pub fn url(&self, service: &DataServiceRow, binding: &BindingRow) -> String {
        format!(
            "{}/auth/v1/{}/{}",
            self.api_url, service.project_id, binding.environment_id
        )
    }
}

/// An auth binding's `AUTH_JWT_SECRET` at credential `generation`: 64 hex
/// characters derived from the master key, whose UTF-8 bytes are the
/// HS256 key. Each rotation derives a new one.
pub(crate) fn jwt_secret(
    master_key: &MasterKey,
    binding_id: &str,
    generation: i32,
) -> Zeroizing<String> {
    let key = match generation {
        ..=0 => master_key.derive(&format!("auth:{binding_id}:jwt-secret")),
        n => master_key.derive(&format!("auth:{binding_id}:jwt-secret:{n}")),
    };
    Zeroizing::new(hex::encode(*key))
}

/// The sealing context of an auth signing key.
pub(crate) fn signing_key_context(kid: &str) -> String {
    format!("auth-signing-key:{kid}")
}

impl Provisioner for AuthProvisioner {
    /// Gives the binding its ES256 keys (one active, one standby), so
    /// switching a project to ES256 or rotating needs no other step.
    async fn converge(
        &self,
        ctx: &Ctx,
        _service: &DataServiceRow,
        binding: &BindingRow,
        desired: Desired,
    ) -> Result<Option<BindingState>, ProvisionError> {
        let reached = match desired {
            // Users, sessions, keys and mail go with the row (cascade).
            Desired::Deleted => return Ok(None),
            Desired::Running => BindingState::Running,
            Desired::Stopped => BindingState::Stopped,
        };
        let present = ctx.store.signing_keys(&binding.id, 0.0).await?;
        for state in ["active", "standby"] {
            if !present.iter().any(|k| k.state == state) {
                let (kid, private, jwk) = mds_auth::jwt::new_es256_key();
                let sealed = ctx.master_key.seal(&signing_key_context(&kid), &private);
                ctx.store
                    .add_signing_key(&binding.id, &kid, state, &sealed, &jwk)
                    .await?;
            }
        }
        Ok(Some(reached))
    }

    fn endpoint(&self, _binding: &BindingRow) -> (String, u16) {
        url_host_port(&self.api_url)
    }

    /// Nothing until auth is enabled for the project.
    fn variables(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Vec<Injected>, ProvisionError> {
        if !mds_auth::AuthConfig::from_stored(&service.config).enabled {
            return Ok(Vec::new());
        }
        let url = self.url(service, binding);
        let secret = jwt_secret(&ctx.master_key, &binding.id, binding.credential_generation);
        Ok(AuthAccess {
            url: &url,
            jwt_secret: &secret,
        }
        .variables(&service.env_prefix))
    }
}
