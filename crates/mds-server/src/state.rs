//! What every handler shares: the control layer (through `Deref`), and
//! the parts only the HTTP surface has.

use std::sync::{Arc, OnceLock};

use mds_auth::mail::Mailer;
use mds_control::Control;
use mds_crypto::MasterKey;

use crate::error::ApiError;

#[derive(Clone)]
pub struct AppState {
    control: Control,
    server: Arc<ServerParts>,
}

/// Requests served, by status class (1xx..5xx), for `/metrics`.
#[derive(Default)]
pub struct RequestCounts(pub [std::sync::atomic::AtomicU64; 5]);

impl RequestCounts {
    pub fn record(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0[class].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What only the HTTP surface holds.
pub struct ServerParts {
    /// The end-user auth API's hasher, mailer and realm cache.
    pub auth: crate::realm::AuthRuntime,
    pub max_body_bytes: usize,
    pub requests: RequestCounts,
    deployer: OnceLock<crate::deploy::Deployer>,
}

impl std::ops::Deref for AppState {
    type Target = Control;
    fn deref(&self) -> &Control {
        &self.control
    }
}

impl AppState {
    pub fn new(master_key: MasterKey, max_body_bytes: usize, mailer: Mailer) -> Self {
        Self {
            control: Control::new(master_key),
            server: Arc::new(ServerParts {
                auth: crate::realm::AuthRuntime::new(mailer),
                max_body_bytes,
                requests: RequestCounts::default(),
                deployer: OnceLock::new(),
            }),
        }
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    pub fn server(&self) -> &ServerParts {
        &self.server
    }

    pub fn set_deployer(&self, deployer: crate::deploy::Deployer) {
        let _ = self.server.deployer.set(deployer);
    }

    pub fn deployer(&self) -> Result<&crate::deploy::Deployer, ApiError> {
        self.server
            .deployer
            .get()
            .ok_or_else(|| ApiError::unavailable("deployments are starting"))
    }
}
