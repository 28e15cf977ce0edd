//! Public networking of a database: its bindings reachable on the managed
//! engine's public listener (`--public-host`), over TLS, from an allowlist
//! of CIDRs.
//!
//! The stored rows (`public_endpoints`) are the desired state; [`apply`]
//! makes the engine's `pg_hba.conf` say exactly them: a `hostssl` line per
//! (binding's database, its role, CIDR). It runs after every change, at
//! start, and whenever bindings change (an environment added later gets
//! its line), under the engine's lock, so two changes never interleave.
//! Redis and the other kinds have no TLS here: `supported: false`.

use std::net::IpAddr;

use ipnet::IpNet;
use mds_api_types::public_networking::{PublicDatabase, PublicNetworking};
use mds_core::kinds::{Desired, ServiceKind};
use mds_engines::{HbaRule, ManagedPostgres, PostgresEngine, PublicEndpoint};
use mds_store::{DataServiceRow, Store};

use crate::attach::load_service;
use crate::{Caller, Control, ControlError, ControlResult};

/// More entries than this belong in a firewall, not in pg_hba.conf.
pub const MAX_ALLOWLIST: usize = 64;

/// What "any source" is written as.
const ANY_SOURCE: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// The normalised CIDRs of an allowlist, in order, without duplicates: an
/// address alone is its /32 or /128, host bits are cleared. A hostname or
/// anything else that is not an address is refused, naming the entry.
pub fn parse_allowlist(entries: &[String]) -> ControlResult<Vec<String>> {
    if entries.is_empty() {
        return Err(ControlError::invalid(
            "allowlist",
            "an empty allowlist admits nobody; leave it out to admit any source, or \
             disable public networking",
        ));
    }
    if entries.len() > MAX_ALLOWLIST {
        return Err(ControlError::invalid(
            "allowlist",
            format!("at most {MAX_ALLOWLIST} entries"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(entries.len());
    for (i, raw) in entries.iter().enumerate() {
        let entry = raw.trim();
        let net = entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                ControlError::invalid(
                    format!("allowlist[{i}]"),
                    format!(
                        "{raw:?} is not an IPv4 or IPv6 address or CIDR (like 203.0.113.7, \
                         10.0.0.0/8 or 2001:db8::/32); hostnames are not accepted"
                    ),
                )
            })?;
        let normal = net.trunc().to_string();
        if !out.contains(&normal) {
            out.push(normal);
        }
    }
    Ok(out)
}

/// The managed engine and its public listener, or why this database
/// cannot have a public endpoint here (and the error a POST answers).
fn support<'a>(
    control: &'a Control,
    service: &DataServiceRow,
) -> Result<(&'a ManagedPostgres, &'a PublicEndpoint), ControlError> {
    let kind = mds_provision::service_kind(service)?;
    if kind != ServiceKind::Postgres {
        return Err(ControlError::conflict(
            "PUBLIC_NETWORKING_UNSUPPORTED",
            format!(
                "a {kind} database has no public endpoint here: mds serves one with TLS for \
                 postgres only"
            ),
        ));
    }
    match control.engine() {
        Some(PostgresEngine::Managed(engine)) => match engine.public_endpoint() {
            Some(endpoint) => Ok((engine, endpoint)),
            None => Err(ControlError::conflict(
                "PUBLIC_ADDRESS_NOT_CONFIGURED",
                "this server has no public address: start it with --public-host ADDR (with \
                 --tls-cert and --tls-key, or it makes a self-signed certificate)",
            )),
        },
        Some(PostgresEngine::External(_)) => Err(ControlError::conflict(
            "PUBLIC_NETWORKING_UNSUPPORTED",
            "this server keeps databases on an external PostgreSQL (--postgres-url), whose \
             networking is that server's to configure",
        )),
        None => Err(ControlError::starting()),
    }
}

/// `GET /databases/{id}/public-networking`.
pub async fn status(
    control: &Control,
    caller: &Caller,
    id: &str,
) -> ControlResult<PublicNetworking> {
    let service = load_service(control, caller, id).await?;
    view(control, &service).await
}

/// Opens the database's endpoint to `allowlist` (replacing the stored
/// one; `None` admits any source) and returns once the engine admits it.
pub async fn enable(
    control: &Control,
    caller: &Caller,
    id: &str,
    allowlist: Option<Vec<String>>,
) -> ControlResult<PublicNetworking> {
    let service = load_service(control, caller, id).await?;
    let allowlist = allowlist.as_deref().map(parse_allowlist).transpose()?;
    if service.deleting {
        return Err(ControlError::conflict(
            "RESOURCE_STATE",
            "this database is being deleted",
        ));
    }
    let (engine, _) = support(control, &service)?;
    let store = control.store()?;
    store
        .set_public_endpoint(&service.id, allowlist.as_deref())
        .await?;
    apply(store, engine).await?;
    tracing::info!(service = service.id, allowlist = ?allowlist, "public networking enabled");
    view(control, &service).await
}

/// Closes the database's endpoint (nothing to do when it is closed).
pub async fn disable(
    control: &Control,
    caller: &Caller,
    id: &str,
) -> ControlResult<PublicNetworking> {
    let service = load_service(control, caller, id).await?;
    let store = control.store()?;
    if store.delete_public_endpoint(&service.id).await? {
        if let Ok((engine, _)) = support(control, &service) {
            apply(store, engine).await?;
        }
        tracing::info!(service = service.id, "public networking disabled");
    }
    view(control, &service).await
}

async fn view(control: &Control, service: &DataServiceRow) -> ControlResult<PublicNetworking> {
    let store = control.store()?;
    let stored = store.public_endpoint(&service.id).await?;
    let supported = support(control, service);
    let endpoint = match (&supported, &stored) {
        (Ok((_, endpoint)), Some(_)) => Some(*endpoint),
        _ => None,
    };
    let allowlist = match (&endpoint, &stored) {
        (Some(_), Some(row)) => row
            .allowlist
            .clone()
            .unwrap_or_else(|| ANY_SOURCE.map(String::from).to_vec()),
        _ => Vec::new(),
    };
    let environments = store
        .bindings(&service.id)
        .await?
        .into_iter()
        .filter(|b| b.desired != Desired::Deleted.as_str())
        .map(|b| PublicDatabase {
            public_url: endpoint.map(|e| {
                public_url(
                    e,
                    &mds_core::names::login_role(&b.resource_name, b.credential_generation),
                    &b.resource_name,
                )
            }),
            environment: b.environment_name,
            database: b.resource_name.clone(),
            username: mds_core::names::login_role(&b.resource_name, b.credential_generation),
        })
        .collect();
    Ok(PublicNetworking {
        database_id: service.id.clone(),
        enabled: endpoint.is_some(),
        supported: supported.is_ok(),
        reason: supported.err().map(|e| e.to_string()),
        host: endpoint.map(|e| e.name.clone()),
        port: endpoint.map(|e| e.port),
        allowlist,
        sslmode: "require".to_string(),
        self_signed_certificate: endpoint.is_some_and(|e| e.self_signed),
        environments,
        updated_at: stored.map(|row| row.updated_at),
    })
}

/// `postgresql://USER@HOST:PORT/NAME?sslmode=require`; the password is the
/// binding's own.
fn public_url(endpoint: &PublicEndpoint, user: &str, name: &str) -> String {
    let host = match endpoint.name.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => endpoint.name.clone(),
    };
    format!(
        "postgresql://{user}@{host}:{}/{name}?sslmode=require",
        endpoint.port
    )
}

/// Makes the engine's public listener admit exactly what the stored rows
/// say; `Ok(true)` when that changed its rules.
pub async fn apply(store: &Store, engine: &ManagedPostgres) -> ControlResult<bool> {
    if engine.public_endpoint().is_none() {
        return Ok(false);
    }
    // Read under the lock: the rules applied last are never older than
    // the rows a concurrent change committed before taking it.
    let mut rules = engine.public_rules().await;
    let wanted: Vec<HbaRule> = store
        .public_access()
        .await?
        .into_iter()
        .flat_map(|row| {
            let sources = row
                .allowlist
                .unwrap_or_else(|| ANY_SOURCE.map(String::from).to_vec());
            sources.into_iter().map(move |source| HbaRule {
                database: row.resource_name.clone(),
                // The owner and its login roles (a rotation's two).
                role: format!("+{}", row.resource_name),
                source,
            })
        })
        .collect();
    let changed = rules
        .apply(wanted)
        .await
        .map_err(|e| ControlError::internal(format!("applying public networking: {e}")))?;
    if changed {
        tracing::info!(
            rules = rules.current().len(),
            "public listener rules applied"
        );
    }
    Ok(changed)
}

/// Keeps the public rules in step with the bindings (an environment made
/// after enabling gets its line; a deleted service loses its lines): on
/// every change of bindings, and every 30 s in case a notice was missed.
pub fn spawn_follow(control: Control) {
    let Some(PostgresEngine::Managed(engine)) = control.engine().cloned() else {
        return;
    };
    if engine.public_endpoint().is_none() {
        return;
    }
    tokio::spawn(async move {
        let Ok(store) = control.store().cloned() else {
            return;
        };
        loop {
            let changed = store.binding_changes().notified();
            if let Err(e) = apply(&store, &engine).await {
                tracing::warn!(error = %e, "keeping public networking rules current");
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[&str], expected: Result<&[&str], &str>) {
        let entries: Vec<String> = input.iter().map(|s| s.to_string()).collect();
        match (parse_allowlist(&entries), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{input:?}"),
            (Err(ControlError::Invalid { field, .. }), Err(want)) => {
                assert_eq!(field, want, "{input:?}")
            }
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn allowlists_are_cidrs_normalised_and_hostnames_are_refused() {
        check(&["10.231.0.2/32"], Ok(&["10.231.0.2/32"]));
        check(&["10.231.0.2"], Ok(&["10.231.0.2/32"]));
        check(&[" 10.1.2.3/8 "], Ok(&["10.0.0.0/8"]));
        check(
            &["2001:db8::1/32", "::1"],
            Ok(&["2001:db8::/32", "::1/128"]),
        );
        check(&["0.0.0.0/0", "0.0.0.0/0"], Ok(&["0.0.0.0/0"]));
        check(&["10.0.0.0/8", "db.example.com"], Err("allowlist[1]"));
        check(&["localhost"], Err("allowlist[0]"));
        check(&["10.0.0.0/33"], Err("allowlist[0]"));
        check(&["10.0.0.0/"], Err("allowlist[0]"));
        check(&["10.0.0.0/8 trust"], Err("allowlist[0]"));
        check(&[""], Err("allowlist[0]"));
        check(&[], Err("allowlist"));
        let many: Vec<String> = (0..=MAX_ALLOWLIST).map(|i| format!("10.0.0.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        check(&many, Err("allowlist"));
    }
}
