//! Versioned schema migrations, applied in order at start-up.
//!
//! An advisory lock serialises replicas starting at once; each migration
//! runs in its own transaction together with its bookkeeping row, so a crash
//! leaves either all of it or none.

use crate::{Result, Store};

/// (version, name, sql), in order. Never edit one that has shipped: add one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "foundation",
        include_str!("../migrations/0001_foundation.sql"),
    ),
    (
        2,
        "cache_invalidation",
        include_str!("../migrations/0002_cache_invalidation.sql"),
    ),
    (
        3,
        "data_services",
        include_str!("../migrations/0003_data_services.sql"),
    ),
    (
        4,
        "service_variables",
        include_str!("../migrations/0004_service_variables.sql"),
    ),
    (
        5,
        "binding_ports",
        include_str!("../migrations/0005_binding_ports.sql"),
    ),
    (6, "storage", include_str!("../migrations/0006_storage.sql")),
    (
        7,
        "storage_functions",
        include_str!("../migrations/0007_storage_functions.sql"),
    ),
    (
        8,
        "inline_chunks",
        include_str!("../migrations/0008_inline_chunks.sql"),
    ),
    (9, "auth", include_str!("../migrations/0009_auth.sql")),
    (
        10,
        "sandboxes",
        include_str!("../migrations/0010_sandboxes.sql"),
    ),
    (
        11,
        "volumes",
        include_str!("../migrations/0011_volumes.sql"),
    ),
    (
        12,
        "binding_names_per_kind",
        include_str!("../migrations/0012_binding_names_per_kind.sql"),
    ),
    (
        13,
        "deployments",
        include_str!("../migrations/0013_deployments.sql"),
    ),
    (
        14,
        "lease_holders",
        include_str!("../migrations/0014_lease_holders.sql"),
    ),
    (
        15,
        "standalone_and_per_environment_services",
        include_str!("../migrations/0015_standalone_and_per_environment_services.sql"),
    ),
    (
        18,
        "public_networking",
        include_str!("../migrations/0018_public_networking.sql"),
    ),
    (
        19,
        "runtime_env",
        include_str!("../migrations/0019_runtime_env.sql"),
    ),
    (
        20,
        "upload_part_meta",
        include_str!("../migrations/0020_upload_part_meta.sql"),
    ),
    (
        21,
        "backups",
        include_str!("../migrations/0021_backups.sql"),
    ),
    (
        22,
        "backup_holds",
        include_str!("../migrations/0022_backup_holds.sql"),
    ),
    (
        23,
        "binding_pools",
        include_str!("../migrations/0023_binding_pools.sql"),
    ),
    (
        24,
        "binding_pool_clients",
        include_str!("../migrations/0024_binding_pool_clients.sql"),
    ),
    (
        25,
        "audit_events",
        include_str!("../migrations/0025_audit_events.sql"),
    ),
    (
        26,
        "environment_ttl",
        include_str!("../migrations/0026_environment_ttl.sql"),
    ),
    (
        27,
        "environment_data",
        include_str!("../migrations/0027_environment_data.sql"),
    ),
    (
        28,
        "credential_rotation",
        include_str!("../migrations/0028_credential_rotation.sql"),
    ),
    (
        29,
        "network_egress",
        include_str!("../migrations/0029_network_egress.sql"),
    ),
];

/// Arbitrary, fixed: the advisory lock id for migrations.
const MIGRATION_LOCK: i64 = 0x006d_6473_5f6d_6967;

impl Store {
    /// Applies the migrations this database lacks; returns how many ran.
    pub async fn migrate(&self) -> Result<usize> {
        let mut client = self.client().await?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version    integer PRIMARY KEY,
                     name       text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            )
            .await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let result = async {
            let mut applied = 0;
            for (version, name, sql) in MIGRATIONS {
                let tx = client.transaction().await?;
                let done = tx
                    .query_opt(
                        "SELECT 1 FROM schema_migrations WHERE version = $1",
                        &[version],
                    )
                    .await?
                    .is_some();
                if !done {
                    tx.batch_execute(sql).await?;
                    tx.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        &[version, name],
                    )
                    .await?;
                    tracing::info!(version, name, "applied migration");
                    applied += 1;
                }
                tx.commit().await?;
            }
            Ok(applied)
        }
        .await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        result
    }
}
