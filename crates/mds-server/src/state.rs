//! What every handler shares: the control layer (through `Deref`), and
//! the parts only the HTTP surface has.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

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
    pub proxy: Client<InstanceConnector, Body>,
}

/// Opens the router's connections to runtime instances, inside their
/// network namespaces: a URI `http://<instance id>:<port>/...` is a
/// connection to `127.0.0.1:<port>` in that instance's namespace. Keyed by
/// instance, the pool never hands one instance's connection to another
/// that happens to use the same port.
#[derive(Clone)]
pub struct InstanceConnector(Control);

impl tower::Service<Uri> for InstanceConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let control = self.0.clone();
        Box::pin(async move {
            let (Some(instance), Some(port)) = (uri.host(), uri.port_u16()) else {
                return Err(std::io::Error::other("not an instance's address"));
            };
            let deployer = control.deployer().map_err(std::io::Error::other)?;
            let stream = deployer.connect_instance(instance, port).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

impl std::ops::Deref for AppState {
    type Target = Control;
    fn deref(&self) -> &Control {
        &self.control
    }
}

impl AppState {
    pub fn new(master_key: MasterKey, max_body_bytes: usize, mailer: Mailer) -> Self {
        let control = Control::new(master_key, mailer);
        Self {
            control: control.clone(),
            server: Arc::new(ServerParts {
                max_body_bytes,
                requests: RequestCounts::default(),
                proxy: Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(std::time::Duration::from_secs(30))
                    .build(InstanceConnector(control)),
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
