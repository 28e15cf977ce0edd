//! The managed PostgreSQL's public listener: its TLS material and the
//! `pg_hba.conf` mds writes.
//!
//! With `--public-host`, the engine also listens on that address, on its
//! one port (a PostgreSQL server has a single port), with `ssl=on`. Who may
//! connect there is exactly what `pg_hba.conf` lists: one `hostssl` line per
//! (database, role, source CIDR) of the databases whose public networking is
//! enabled. The loopback lines are initdb's, so the platform's own access is
//! unchanged, and a connection to the public address that no line names is
//! refused. mds owns the file: every start writes the loopback lines only
//! (fail closed until the stored allowlists are applied again), and every
//! change rewrites it whole and reloads the server.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{EngineError, OsUser};

/// `--public-host` and, optionally, `--tls-cert`/`--tls-key`.
#[derive(Debug, Clone)]
pub struct PublicListener {
    pub host: IpAddr,
    /// The name (or address) clients use, when not `host` (a wildcard
    /// host, an address behind NAT).
    pub name: Option<String>,
    /// A certificate chain and its private key (PEM) to serve; without
    /// them, a self-signed pair is made at first start and kept.
    pub tls: Option<GivenTls>,
}

#[derive(Debug, Clone)]
pub struct GivenTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the public listener answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicEndpoint {
    /// The address listened on.
    pub host: IpAddr,
    /// What clients connect to: `--public-hostname`, else `host`.
    pub name: String,
    pub port: u16,
    /// The certificate is the one mds made (clients cannot verify it:
    /// `sslmode=require`).
    pub self_signed: bool,
}

/// One `hostssl` line: `database` may be reached as `role` (`+NAME`: that
/// role and its members) from `source`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HbaRule {
    pub database: String,
    pub role: String,
    /// A CIDR (`10.0.0.0/24`, `2001:db8::/32`).
    pub source: String,
}

/// Lines every start writes: initdb's own (`--auth=scram-sha-256`), which
/// admit loopback only.
const LOOPBACK_LINES: &str = "\
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
";

/// The whole `pg_hba.conf` for `rules`.
pub(crate) fn render(rules: &[HbaRule]) -> Result<String, EngineError> {
    let mut text = String::from(
        "# Written by mds at every start and on every public-networking change;\n\
         # edits here are lost.\n",
    );
    text.push_str(LOOPBACK_LINES);
    text.push_str("# Public networking: (database, role, source), TLS only.\n");
    for rule in rules {
        check_source(&rule.source)?;
        let _ = writeln!(
            text,
            "hostssl {} {} {} scram-sha-256",
            hba_name(&rule.database)?,
            hba_name(&rule.role)?,
            rule.source
        );
    }
    Ok(text)
}

/// A database or role name, double-quoted so that a name like `all` or
/// `replication` is not read as a keyword. pg_hba has no escape for a
/// quote inside quotes, so such a name (mds never makes one) is refused.
fn hba_name(name: &str) -> Result<String, EngineError> {
    // `+ROLE`: the role and its members (a binding's login roles), which
    // pg_hba reads so only unquoted; mds's role names need no quotes.
    if let Some(role) = name.strip_prefix('+') {
        if !role.is_empty()
            && role
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Ok(name.to_string());
        }
        return Err(EngineError::Other(format!(
            "{name:?} cannot be written in pg_hba.conf"
        )));
    }
    if name.is_empty()
        || name
            .chars()
            .any(|c| c == '"' || c.is_whitespace() || c.is_control())
    {
        return Err(EngineError::Other(format!(
            "{name:?} cannot be written in pg_hba.conf"
        )));
    }
    Ok(format!("\"{name}\""))
}

/// A CIDR of an address and a prefix length that fits it.
fn check_source(source: &str) -> Result<(), EngineError> {
    let bad = || EngineError::Other(format!("{source:?} is not a CIDR"));
    let (addr, bits) = source.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let bits: u8 = bits.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if bits > max {
        return Err(bad());
    }
    Ok(())
}

/// Writes `contents` to `path` through a temporary file that already has
/// its owner and mode, so the server never reads a partial file or one it
/// may not open.
pub(crate) fn write_owned(
    path: &Path,
    contents: &[u8],
    os_user: Option<&OsUser>,
) -> Result<(), EngineError> {
    let tmp = path.with_extension("mds-tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(EngineError::io(format!("create {}", tmp.display())))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(EngineError::io(format!("write {}", tmp.display())))?;
    if let Some(user) = os_user {
        user.chown(&tmp)?;
    }
    fs::rename(&tmp, path).map_err(EngineError::io(format!("replace {}", path.display())))
}

/// The certificate and key the server reads, under `home/tls` and owned by
/// the engine's OS user (PostgreSQL refuses a key others can read). Given
/// files are copied at every start, so a renewed pair is served after a
/// restart; a self-signed pair is made once for `host` and kept.
pub(crate) fn tls_material(
    home: &Path,
    listener: &PublicListener,
    os_user: Option<&OsUser>,
) -> Result<(PathBuf, PathBuf, bool), EngineError> {
    let dir = home.join("tls");
    fs::create_dir_all(&dir).map_err(EngineError::io(format!("create {}", dir.display())))?;
    if let Some(user) = os_user {
        user.chown(&dir)?;
    }
    if let Some(given) = &listener.tls {
        let read = |path: &Path, marker: &str, flag: &str| {
            let bytes = fs::read(path).map_err(|e| {
                EngineError::Other(format!("{flag} {}: cannot read it: {e}", path.display()))
            })?;
            if !String::from_utf8_lossy(&bytes).contains(marker) {
                return Err(EngineError::Other(format!(
                    "{flag} {} is not PEM (no {marker:?} in it)",
                    path.display()
                )));
            }
            Ok(bytes)
        };
        let cert = read(&given.cert, "-----BEGIN CERTIFICATE-----", "--tls-cert")?;
        let key = read(&given.key, "PRIVATE KEY-----", "--tls-key")?;
        let (cert_path, key_path) = (dir.join("given.crt"), dir.join("given.key"));
        write_owned(&cert_path, &cert, os_user)?;
        write_owned(&key_path, &key, os_user)?;
        return Ok((cert_path, key_path, false));
    }
    let (cert_path, key_path) = (dir.join("self-signed.crt"), dir.join("self-signed.key"));
    // Made again when the names it must carry change.
    let names_path = dir.join("self-signed.names");
    let host = listener.host.to_string();
    let mut names = vec![host.clone()];
    names.extend(listener.name.iter().filter(|n| **n != host).cloned());
    names.push("localhost".to_string());
    let joined = names.join(" ");
    let current = cert_path.is_file()
        && key_path.is_file()
        && fs::read_to_string(&names_path).is_ok_and(|made_for| made_for == joined);
    if !current {
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| EngineError::Other(format!("making a self-signed certificate: {e}")))?;
        // Key first: a certificate is never kept without its key.
        write_owned(
            &key_path,
            made.signing_key.serialize_pem().as_bytes(),
            os_user,
        )?;
        write_owned(&cert_path, made.cert.pem().as_bytes(), os_user)?;
        write_owned(&names_path, joined.as_bytes(), os_user)?;
        tracing::info!(names = %joined, path = %cert_path.display(), "made a self-signed certificate for the public listener");
    }
    Ok((cert_path, key_path, true))
}

/// `listen_addresses` for loopback plus `host`. A wildcard already covers
/// loopback, and binding 127.0.0.1 beside 0.0.0.0 on one port fails.
pub(crate) fn listen_addresses(host: Option<IpAddr>) -> String {
    match host {
        None => "127.0.0.1".to_string(),
        Some(IpAddr::V4(v4)) if v4.is_unspecified() => "0.0.0.0".to_string(),
        // PostgreSQL sets IPV6_V6ONLY, so `::` does not cover 127.0.0.1.
        Some(host) => format!("127.0.0.1,{host}"),
    }
}

/// Fails unless `host` is an address of this machine other than loopback:
/// PostgreSQL only warns about an address it cannot bind and serves
/// without it, and a loopback source matches the loopback lines, which
/// admit every database to any client with its password.
pub(crate) fn check_host(listener: &PublicListener) -> Result<(), EngineError> {
    if let Some(name) = &listener.name {
        let dns = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
        let fits = dns || name.parse::<IpAddr>().is_ok();
        if !fits {
            return Err(EngineError::Other(format!(
                "--public-hostname {name:?} is not a DNS name or an address"
            )));
        }
    }
    let host = listener.host;
    if host.is_loopback() {
        return Err(EngineError::Other(format!(
            "--public-host {host} is a loopback address, where mds already listens for \
             itself; give an address other machines reach"
        )));
    }
    std::net::TcpListener::bind((host, 0))
        .map(drop)
        .map_err(|e| {
            EngineError::Other(format!(
                "--public-host {host} cannot be listened on ({e}); give an address of this \
                 machine"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(database: &str, source: &str) -> HbaRule {
        HbaRule {
            database: database.to_string(),
            role: database.to_string(),
            source: source.to_string(),
        }
    }

    #[test]
    fn renders_loopback_then_one_hostssl_line_per_rule() {
        let text = render(&[rule("app__production", "10.0.0.0/24"), rule("all", "::/0")])
            .expect("renders");
        assert!(text.contains("host    all             all             127.0.0.1/32"));
        assert!(text.contains(
            "hostssl \"app__production\" \"app__production\" 10.0.0.0/24 scram-sha-256\n"
        ));
        // A keyword as a name is quoted, so it means that name only.
        assert!(text.contains("hostssl \"all\" \"all\" ::/0 scram-sha-256\n"));
        assert!(!text.contains("\nhost    all             all             0.0.0.0"));
    }

    #[test]
    fn refuses_what_pg_hba_cannot_say() {
        for (database, source) in [
            ("a\"b", "10.0.0.0/8"),
            ("a b", "10.0.0.0/8"),
            ("", "10.0.0.0/8"),
            ("db", "10.0.0.0"),
            ("db", "10.0.0.0/33"),
            ("db", "example.com/32"),
            ("db", "::/129"),
            ("db", "10.0.0.0/8 trust"),
        ] {
            assert!(
                render(&[rule(database, source)]).is_err(),
                "{database:?} {source:?}"
            );
        }
    }

    #[test]
    fn the_public_host_is_an_address_of_this_machine_and_not_loopback() {
        let listener = |host: &str, name: Option<&str>| PublicListener {
            host: host.parse().expect("ip"),
            name: name.map(String::from),
            tls: None,
        };
        for host in ["127.0.0.1", "127.0.0.2", "::1", "192.0.2.1"] {
            assert!(check_host(&listener(host, None)).is_err(), "{host}");
        }
        assert!(check_host(&listener("0.0.0.0", None)).is_ok());
        for name in ["db.example.com", "203.0.113.7", "2001:db8::7"] {
            assert!(
                check_host(&listener("0.0.0.0", Some(name))).is_ok(),
                "{name}"
            );
        }
        for name in ["", "db example", "db/x", "a\nb", "db:5432"] {
            assert!(
                check_host(&listener("0.0.0.0", Some(name))).is_err(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn listens_on_loopback_and_the_public_host() {
        assert_eq!(listen_addresses(None), "127.0.0.1");
        assert_eq!(
            listen_addresses(Some("10.1.2.3".parse().expect("ip"))),
            "127.0.0.1,10.1.2.3"
        );
        assert_eq!(
            listen_addresses(Some("0.0.0.0".parse().expect("ip"))),
            "0.0.0.0"
        );
        assert_eq!(
            listen_addresses(Some("::".parse().expect("ip"))),
            "127.0.0.1,::"
        );
    }
}
