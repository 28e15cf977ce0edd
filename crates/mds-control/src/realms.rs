//! A realm is one auth binding as the end-user API sees it: a project
//! environment's users, settings, secret and keys, served at
//! `AUTH_URL = API_URL/auth/v1/PROJECT/ENVIRONMENT`.
//!
//! Realms are cached for two seconds, like S3 keys: a setting changed or a
//! key rotated elsewhere reaches every replica within that, and at once on
//! the replica that made the change.
//!
//! The administration of auth lives here too: enabling it (attaching the
//! `auth` data service on first use), its settings, disabling it (users
//! are kept) and rotating an environment's signing keys. What a realm's
//! users do with it is in [`crate::sessions`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mds_api_types::auth::Jwks;
use mds_auth::jwt::{self, Signer, VerifyKeys};
use mds_auth::mail::Mailer;
use mds_auth::password::Hasher;
use mds_auth::AuthConfig;
use mds_core::kinds::ServiceKind;
use mds_provision::Reconciler;
use mds_store::{DataServiceRow, ProjectRow, SigningKeyRow};
use p256::ecdsa::{SigningKey, VerifyingKey};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::attach::{attach, wait_settled, KindOptions};
use crate::{Control, ControlError, ControlResult};

const REALM_TTL: Duration = Duration::from_secs(2);

pub struct Realm {
    pub project_id: String,
    pub project_slug: String,
    pub environment: String,
    pub binding_id: String,
    pub config: AuthConfig,
    /// `AUTH_URL`, also the issuer of its tokens.
    pub url: String,
    /// `AUTH_JWT_SECRET`, which signs; then, during a rotation's grace
    /// period, the one it replaced, which still verifies.
    hs256: Vec<Zeroizing<String>>,
    /// Published: standby, active and recently retired ES256 keys.
    es256: Vec<(String, VerifyingKey)>,
    active: Option<(String, SigningKey)>,
    pub jwks: Jwks,
}

impl Realm {
    /// Non-production environments keep their mail in the sink.
    pub fn is_production(&self) -> bool {
        mds_core::names::environment_kind(&self.environment) == "production"
    }

    pub fn sign(&self, claims: &Value) -> String {
        match (&self.active, self.config.signing_algorithm.as_str()) {
            (Some((kid, key)), "ES256") => jwt::sign(claims, &Signer::Es256 { kid, key }),
            _ => jwt::sign(claims, &Signer::Hs256(self.hs256[0].as_bytes())),
        }
    }

    /// The claims of a valid token of this realm. In ES256 mode HS256
    /// tokens are refused: `AUTH_JWT_SECRET` is in every app's environment,
    /// and the point of ES256 is that apps cannot mint tokens.
    pub fn verify(&self, token: &str) -> Result<Value, jwt::JwtError> {
        let hs256: Vec<&[u8]> = match self.config.signing_algorithm.as_str() {
            "ES256" => Vec::new(),
            _ => self.hs256.iter().map(|s| s.as_bytes()).collect(),
        };
        let keys = VerifyKeys {
            hs256: &hs256,
            es256: &self.es256,
        };
        let path = self.url.find("/auth/v1/").map_or("", |at| &self.url[at..]);
        jwt::verify(token, &keys, path, chrono::Utc::now().timestamp())
    }
}

/// (project id, environment id or slug), as the URL names them.
type RealmKey = (String, String);

/// What the end-user API shares: the password hasher, mail delivery and
/// the realm cache.
pub struct AuthRuntime {
    pub hasher: Hasher,
    pub mailer: Mailer,
    realms: Mutex<HashMap<RealmKey, (Instant, Arc<Realm>)>>,
}

impl AuthRuntime {
    pub fn new(mailer: Mailer) -> Self {
        Self {
            hasher: Hasher::new(0),
            mailer,
            realms: Mutex::default(),
        }
    }

    /// Forgets the cached realms of a project after a change made here.
    pub fn forget(&self, project_id: &str) {
        self.realms
            .lock()
            .expect("never poisoned")
            .retain(|(p, _), _| p != project_id);
    }
}

fn not_enabled() -> ControlError {
    ControlError::Absent {
        code: "auth_not_enabled",
        message: "auth is not enabled for this project environment".to_string(),
    }
}

/// The realm at `project`/`environment` (environment id or slug).
pub async fn load(
    control: &Control,
    project: &str,
    environment: &str,
) -> ControlResult<Arc<Realm>> {
    let key = (project.to_string(), environment.to_string());
    if let Some((at, realm)) = control
        .auth
        .realms
        .lock()
        .expect("never poisoned")
        .get(&key)
    {
        if at.elapsed() < REALM_TTL {
            return Ok(realm.clone());
        }
    }
    let store = control.store()?;
    let reconciler = control.reconciler()?;
    let (service, binding, project_slug) = store
        .auth_binding(project, environment)
        .await?
        .ok_or_else(not_enabled)?;
    let config = AuthConfig::from_stored(&service.config);
    if !config.enabled {
        return Err(not_enabled());
    }
    if !crate::is_running(&binding) {
        return Err(ControlError::unavailable(
            "auth for this environment is being set up; retry shortly",
        ));
    }
    let keys = store
        .signing_keys(&binding.id, f64::from(config.token_expiry_sec))
        .await?;
    let mut es256 = Vec::new();
    let mut active = None;
    let mut published = Vec::new();
    for key in keys {
        let private = control
            .master_key
            .open(
                &Reconciler::signing_key_context(&key.kid),
                &key.sealed_private,
            )
            .map_err(ControlError::internal)?;
        let signing = jwt::signing_key(&private).ok_or_else(|| {
            ControlError::internal(format!("signing key {} is malformed", key.kid))
        })?;
        es256.push((key.kid.clone(), *signing.verifying_key()));
        published.push(key.public_jwk.clone());
        if key.state == "active" {
            active = Some((key.kid.clone(), signing));
        }
    }
    let realm = Arc::new(Realm {
        url: reconciler.auth_url(&service, &binding),
        hs256: std::iter::once(binding.credential_generation)
            .chain(
                binding
                    .previous_sealed_password
                    .as_ref()
                    .map(|_| binding.credential_generation - 1),
            )
            .map(|generation| reconciler.auth_jwt_secret(&binding.id, generation))
            .collect(),
        project_id: service.project_id.clone(),
        project_slug,
        environment: binding.environment_name.clone(),
        binding_id: binding.id.clone(),
        config,
        es256,
        active,
        jwks: Jwks { keys: published },
    });
    control
        .auth
        .realms
        .lock()
        .expect("never poisoned")
        .insert(key, (Instant::now(), realm.clone()));
    Ok(realm)
}

/// The project's auth service (one per project; its bindings are the
/// realms), unless it is being deleted.
pub async fn service(control: &Control, project_id: &str) -> ControlResult<Option<DataServiceRow>> {
    Ok(control
        .store()?
        .data_services(project_id)
        .await?
        .into_iter()
        .find(|s| s.kind.parse() == Ok(ServiceKind::Auth) && !s.deleting))
}

/// Enables auth for `project` with `patch` applied: attaches it on first
/// use (and waits for its bindings), else turns it back on.
pub async fn enable(
    control: &Control,
    project: &ProjectRow,
    patch: &Map<String, Value>,
) -> ControlResult<()> {
    match service(control, &project.id).await? {
        None => {
            let options = KindOptions {
                auth: Some(patch.clone()),
                ..KindOptions::default()
            };
            let service = attach(control, project, ServiceKind::Auth, None, None, &options).await?;
            wait_settled(control, &service.id).await?;
        }
        Some(service) => {
            let mut patch = patch.clone();
            patch.insert("enabled".into(), Value::Bool(true));
            configure(control, &service, &patch).await?;
        }
    }
    control.auth.forget(&project.id);
    Ok(())
}

/// Applies `patch` to the service's settings; every replica sees them
/// within the realm cache's lifetime, this one at once.
pub async fn configure(
    control: &Control,
    service: &DataServiceRow,
    patch: &Map<String, Value>,
) -> ControlResult<()> {
    let mut config = AuthConfig::from_stored(&service.config);
    config
        .apply(patch)
        .map_err(|e| ControlError::invalid(e.field, e.message))?;
    control
        .store()?
        .set_service_config(&service.id, &config.to_stored())
        .await?;
    control.auth.forget(&service.project_id);
    tracing::info!(service = service.id, "auth settings changed");
    Ok(())
}

/// Turns auth off, keeping its users; a project without auth is left as
/// it is.
pub async fn disable(control: &Control, project_id: &str) -> ControlResult<()> {
    if let Some(service) = service(control, project_id).await? {
        let mut patch = Map::new();
        patch.insert("enabled".into(), Value::Bool(false));
        configure(control, &service, &patch).await?;
    }
    Ok(())
}

/// One rotation step for a binding's ES256 keys: the standby key starts
/// signing, the active one retires (still published until its tokens
/// expire) and a new standby is published. Answers every key.
pub async fn rotate_keys(
    control: &Control,
    project_id: &str,
    binding_id: &str,
) -> ControlResult<Vec<SigningKeyRow>> {
    let (kid, private, jwk) = jwt::new_es256_key();
    let sealed = control
        .master_key
        .seal(&Reconciler::signing_key_context(&kid), &private);
    let store = control.store()?;
    store
        .rotate_signing_keys(binding_id, &kid, &sealed, &jwk)
        .await?;
    control.auth.forget(project_id);
    tracing::info!(
        binding = binding_id,
        standby = kid,
        "auth signing keys rotated"
    );
    Ok(store.signing_keys(binding_id, 1e9).await?)
}
