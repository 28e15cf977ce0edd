//! What every handler shares: the control layer (through `Deref`), and
//! the parts only the HTTP surface has.

use std::sync::Arc;

use axum::body::Body;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use mds_auth::mail::Mailer;
use mds_control::Control;
use mds_crypto::MasterKey;

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
    pub max_body_bytes: usize,
    pub requests: RequestCounts,
    /// Pooled connections to runtime instances, for the router.
    pub proxy: Client<HttpConnector, Body>,
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
            control: Control::new(master_key, mailer),
            server: Arc::new(ServerParts {
                max_body_bytes,
                requests: RequestCounts::default(),
                proxy: Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(std::time::Duration::from_secs(30))
                    .build_http(),
            }),
        }
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    pub fn server(&self) -> &ServerParts {
        &self.server
    }
}
