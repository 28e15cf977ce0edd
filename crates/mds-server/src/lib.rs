//! The mds server: boots the platform (data dir, master key, engine,
//! migrations, admin key) and serves the MIOSA-compatible API.

mod audit;
mod auth;
mod boot;
mod error;
mod extract;
mod idempotency;
mod request_id;
mod router;
mod routes;
mod s3_keys;
mod sse;
mod state;
mod views;

pub use boot::{run, Ready, ServerConfig, ADMIN_KEY_FILE, SERVER_INFO_FILE};
pub use mds_control::backups::BackupSettings;
