//! What `/databases/{id}/public-networking` takes and answers.

use serde::{Deserialize, Serialize};

use crate::{time, Timestamp};

/// `POST /databases/{id}/public-networking`: the allowlist REPLACES the
/// stored one; absent admits any source.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct EnablePublicNetworking {
    pub allowlist: Option<Vec<String>>,
}

/// A database's public endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicNetworking {
    pub database_id: String,
    /// Open now: reachable on `host:port` from the allowlist.
    pub enabled: bool,
    /// Whether this database can have a public endpoint on this server
    /// (a managed Postgres, started with `--public-host`).
    pub supported: bool,
    /// Why it is not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The public address while enabled.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Normalised CIDRs; `["0.0.0.0/0", "::/0"]` when any source is
    /// admitted, empty while disabled.
    pub allowlist: Vec<String>,
    /// TLS is required: `require` (the certificate is self-signed unless
    /// the server was given one).
    pub sslmode: String,
    pub self_signed_certificate: bool,
    /// One database per environment, each with its own credentials
    /// (`GET /databases/{id}/credentials?environment=`).
    pub environments: Vec<PublicDatabase>,
    #[serde(
        default,
        serialize_with = "time::serialize_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub updated_at: Option<Timestamp>,
}

/// One environment's database as reached on the public endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicDatabase {
    pub environment: String,
    pub database: String,
    pub username: String,
    /// The connection URL without the password.
    pub public_url: Option<String>,
}
