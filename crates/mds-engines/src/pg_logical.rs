//! Logical backups of one tenant database: `pg_dump -Fc` under a snapshot
//! whose per-table row counts and checksums are recorded with it,
//! `pg_restore` into a fresh database, and the swap of a checked fresh
//! database in for the live one.
//!
//! The checksum of a table is the sum of a 64-bit hash of each row's text
//! form: independent of row order and cheap (no sort), so it can run
//! beside the dump on the same snapshot, and equal after a restore.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::EngineError;

/// One table's rows at a moment: what a drill compares after a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStat {
    /// Schema-qualified, quoted as needed.
    pub table: String,
    pub rows: i64,
    /// The sum of `hashtextextended(row::text, 0)` over the rows.
    pub checksum: String,
}

/// The first difference between two tables' stats, in words.
pub fn compare_stats(recorded: &[TableStat], found: &[TableStat]) -> Result<(), String> {
    for want in recorded {
        match found.iter().find(|f| f.table == want.table) {
            None => return Err(format!("table {} is missing", want.table)),
            Some(got) if got.rows != want.rows => {
                return Err(format!(
                    "table {} has {} rows, {} were recorded",
                    want.table, got.rows, want.rows
                ))
            }
            Some(got) if got.checksum != want.checksum => {
                return Err(format!(
                    "table {} has the recorded {} rows but other contents (checksum {} != {})",
                    want.table, got.rows, got.checksum, want.checksum
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found
        .iter()
        .find(|f| !recorded.iter().any(|r| r.table == f.table))
    {
        return Err(format!("table {} was not recorded", extra.table));
    }
    Ok(())
}

/// Row counts and checksums of every user table, in the client's current
/// transaction (its snapshot).
pub async fn table_stats(client: &Client) -> Result<Vec<TableStat>, tokio_postgres::Error> {
    let tables: Vec<String> = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_%'
             ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut stats = Vec::with_capacity(tables.len());
    for table in tables {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text
                     FROM {table} t"
                ),
                &[],
            )
            .await?;
        stats.push(TableStat {
            table,
            rows: row.get(0),
            checksum: row.get(1),
        });
    }
    Ok(stats)
}

/// A connection as `config` says, its driver on a task of its own.
pub async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A client program (`pg_dump`, `pg_restore`) pointed at `config`'s server
/// and database `db`, the password in its environment.
fn client_program(program: PathBuf, config: &Config, db: &str) -> Command {
    let mut cmd = Command::new(program);
    if let Some(tokio_postgres::config::Host::Tcp(host)) = config.get_hosts().first() {
        cmd.arg("-h").arg(host);
    }
    if let Some(port) = config.get_ports().first() {
        cmd.arg("-p").arg(port.to_string());
    }
    if let Some(user) = config.get_user() {
        cmd.arg("-U").arg(user);
    }
    if let Some(password) = config.get_password() {
        cmd.env("PGPASSWORD", String::from_utf8_lossy(password).to_string());
    }
    cmd.arg("-d")
        .arg(db)
        .arg("--no-password")
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// `pg_dump -Fc` of `db`, on `snapshot` if given (exported by a
/// transaction that stays open until the dump has started); its stdout is
/// the archive.
pub fn dump_command(bin_dir: &Path, config: &Config, db: &str, snapshot: Option<&str>) -> Command {
    let mut cmd = client_program(bin_dir.join("pg_dump"), config, db);
    cmd.arg("-Fc").stdout(Stdio::piped());
    if let Some(snapshot) = snapshot {
        cmd.arg(format!("--snapshot={snapshot}"));
    }
    cmd
}

/// `pg_restore` of an archive read from stdin into `db`, in one
/// transaction. Objects are created as `role` (so it owns them); `keep_acl`
/// keeps the archive's GRANTs, which name the roles of the source.
pub fn restore_command(
    bin_dir: &Path,
    config: &Config,
    db: &str,
    role: Option<&str>,
    keep_acl: bool,
    schema_only: bool,
) -> Command {
    let mut cmd = client_program(bin_dir.join("pg_restore"), config, db);
    cmd.args(["--no-owner", "--exit-on-error", "--single-transaction"])
        .stdin(Stdio::piped());
    if schema_only {
        cmd.arg("--schema-only");
    }
    if let Some(role) = role {
        cmd.arg(format!("--role={role}"));
    }
    if !keep_acl {
        cmd.arg("--no-acl");
    }
    cmd
}

/// Waits for a client program and turns a failure into an error with what
/// it printed.
pub async fn finish_program(
    mut child: tokio::process::Child,
    what: &str,
) -> Result<(), EngineError> {
    let stderr = child.stderr.take();
    let printed = async {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            use tokio::io::AsyncReadExt;
            let _ = stderr.read_to_string(&mut text).await;
        }
        text
    };
    let (status, printed) = tokio::join!(child.wait(), printed);
    let status = status.map_err(EngineError::io(format!("waiting for {what}")))?;
    if status.success() {
        Ok(())
    } else {
        let tail: String = printed
            .lines()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        Err(EngineError::Other(format!(
            "{what} failed ({status}): {tail}"
        )))
    }
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Makes an empty database `name` owned by `owner`, reachable only by it
/// (as a binding's database is).
pub async fn create_database(admin: &Client, name: &str, owner: &str) -> Result<(), EngineError> {
    create_database_from(admin, name, owner, None).await
}

/// [`create_database`], as a copy of `template` when given (which no one
/// may be connected to).
pub async fn create_database_from(
    admin: &Client,
    name: &str,
    owner: &str,
    template: Option<&str>,
) -> Result<(), EngineError> {
    let (db, role) = (ident(name), ident(owner));
    let from = template
        .map(|t| format!(" TEMPLATE {}", ident(t)))
        .unwrap_or_default();
    admin
        .batch_execute(&format!("CREATE DATABASE {db} OWNER {role}{from}"))
        .await
        .map_err(|e| EngineError::Other(format!("creating database {name}: {e}")))?;
    admin
        .batch_execute(&format!(
            "REVOKE ALL ON DATABASE {db} FROM PUBLIC;
             GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role};"
        ))
        .await
        .map_err(|e| EngineError::Other(format!("closing database {name}: {e}")))?;
    Ok(())
}

pub async fn drop_database(admin: &Client, name: &str) -> Result<(), EngineError> {
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            ident(name)
        ))
        .await
        .map_err(|e| EngineError::Other(format!("dropping database {name}: {e}")))
}

/// Puts database `fresh` in the place of `live`, which becomes `aside`:
/// connections to `live` are refused, those open are ended (their count
/// is returned), and the two renames follow. If anything fails, `live`
/// is put back as it was.
pub async fn swap_database(
    admin: &Client,
    live: &str,
    fresh: &str,
    aside: &str,
) -> Result<u64, EngineError> {
    let (live_q, fresh_q, aside_q) = (ident(live), ident(fresh), ident(aside));
    let fail = |what: &str, e: tokio_postgres::Error| {
        EngineError::Other(format!("{what}: {}", describe(&e)))
    };
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {live_q} WITH ALLOW_CONNECTIONS false"
        ))
        .await
        .map_err(|e| fail("closing the database to new connections", e))?;
    let mut terminated = 0u64;
    let mut renamed = false;
    for _ in 0..100 {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
                 FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&live],
            )
            .await
            .map_err(|e| fail("ending connections", e))?
            .get(0);
        terminated += n as u64;
        match admin
            .batch_execute(&format!("ALTER DATABASE {live_q} RENAME TO {aside_q}"))
            .await
        {
            Ok(()) => {
                renamed = true;
                break;
            }
            // Ended backends take a moment to leave.
            Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                reopen(admin, &live_q).await;
                return Err(fail("moving the live database aside", e));
            }
        }
    }
    if !renamed {
        reopen(admin, &live_q).await;
        return Err(EngineError::Other(
            "connections to the live database did not end within 5 s".to_string(),
        ));
    }
    if let Err(e) = admin
        .batch_execute(&format!("ALTER DATABASE {fresh_q} RENAME TO {live_q}"))
        .await
    {
        let _ = admin
            .batch_execute(&format!("ALTER DATABASE {aside_q} RENAME TO {live_q}"))
            .await;
        reopen(admin, &live_q).await;
        return Err(fail("putting the restored database in place", e));
    }
    reopen(admin, &live_q).await;
    Ok(terminated)
}

async fn reopen(admin: &Client, db: &str) {
    if let Err(e) = admin
        .batch_execute(&format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true"))
        .await
    {
        tracing::error!(database = db, error = %e, "could not reopen a database to connections");
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}
