//! What a restore point holds of a Postgres binding: `pg_dump -Fc` of its
//! database taken on an exported snapshot, with every table's row count
//! and checksum computed on that same snapshot beside the dump, and its
//! role's attributes.

use mds_engines::pg_logical::{self, TableStat};
use mds_store::quote::ident;
use mds_store::{BindingRow, RestorePointItemRow};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_postgres::Config;

use super::{failed, Backups, Captured};
use crate::{Control, ControlError, ControlResult};

pub(super) fn admin_config(control: &Control) -> ControlResult<Config> {
    Ok(control
        .engine()
        .ok_or_else(ControlError::starting)?
        .admin_config())
}

fn bin_dir() -> ControlResult<std::path::PathBuf> {
    mds_engines::find_postgres_binaries()
        .map(|b| b.bin_dir)
        .map_err(|e| failed("the PostgreSQL client programs", e))
}

fn on_database(config: &Config, db: &str) -> Config {
    let mut config = config.clone();
    config.dbname(db);
    config
}

fn stats_json(stats: &[TableStat]) -> Value {
    Value::Array(
        stats
            .iter()
            .map(|s| json!({ "table": s.table, "rows": s.rows, "checksum": s.checksum }))
            .collect(),
    )
}

fn stats_from(record: &Value) -> Vec<TableStat> {
    record
        .get("tables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(TableStat {
                table: t.get("table")?.as_str()?.to_string(),
                rows: t.get("rows")?.as_i64()?,
                checksum: t.get("checksum")?.as_str()?.to_string(),
            })
        })
        .collect()
}

pub(super) fn summary(record: &Value) -> String {
    let stats = stats_from(record);
    let rows: i64 = stats.iter().map(|s| s.rows).sum();
    format!("{} tables, {rows} rows", stats.len())
}

pub(super) async fn capture(
    control: &Control,
    backups: &Backups,
    binding: &BindingRow,
    dir: &str,
) -> ControlResult<Captured> {
    let admin = admin_config(control)?;
    let db = &binding.resource_name;
    let client = pg_logical::connect(&on_database(&admin, db))
        .await
        .map_err(|e| failed("connecting to the database", e))?;
    // The snapshot both the dump and the table stats read.
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| failed("opening a snapshot", e))?;
    let snapshot: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| failed("exporting a snapshot", e))?
        .get(0);
    let role = client
        .query_opt(
            "SELECT rolname, rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = $1",
            &[db],
        )
        .await
        .map_err(|e| failed("reading the role", e))?
        .map(|r| {
            json!({
                "name": r.get::<_, String>(0),
                "login": r.get::<_, bool>(1),
                "connection_limit": r.get::<_, i32>(2),
            })
        });
    let path = format!("{dir}/{}.pgdump", binding.id);
    let mut writer = backups.repo.create(&path).await?;
    let mut child = match pg_logical::dump_command(&bin_dir()?, &admin, db, Some(&snapshot)).spawn()
    {
        Ok(child) => child,
        Err(e) => {
            writer.abort().await;
            return Err(failed("starting pg_dump", e));
        }
    };
    let Some(stdout) = child.stdout.take() else {
        writer.abort().await;
        return Err(ControlError::internal("pg_dump has no stdout"));
    };
    let copy = async {
        // Owned: a failed write (a full disk) closes the pipe, so pg_dump
        // ends instead of waiting on it.
        let mut stdout = stdout;
        tokio::io::copy(&mut stdout, &mut writer).await?;
        writer.flush().await
    };
    let (copied, stats) = tokio::join!(copy, pg_logical::table_stats(&client));
    if copied.is_err() {
        let _ = child.start_kill();
    }
    let dumped = pg_logical::finish_program(child, "pg_dump").await;
    let _ = client.batch_execute("COMMIT").await;
    let problem = match (&copied, &stats, &dumped) {
        (Err(e), _, _) => Some(format!("writing the dump to the repository: {e}")),
        (_, Err(e), _) => Some(format!("counting the tables: {e}")),
        (_, _, Err(e)) => Some(e.to_string()),
        _ => None,
    };
    if let Some(why) = problem {
        writer.abort().await;
        return Err(failed("the database was not captured", why));
    }
    let entry = writer.finish().await?;
    let stats = stats.map_err(|e| failed("counting the tables", e))?;
    Ok(Captured {
        files: vec![entry],
        record: json!({ "database": db, "role": role, "tables": stats_json(&stats) }),
    })
}

/// Where a restore's data comes from.
pub(super) enum Input<'a> {
    /// A point's dump.
    Item(&'a RestorePointItemRow),
    /// A database of a recovered scratch instance (point-in-time).
    Scratch { config: Box<Config>, db: String },
}

/// Restores `input` into a new database on the engine owned by `owner`
/// (or by the admin), and checks it against the recorded stats (or the
/// scratch database's). Returns the new database's name and the stats;
/// on error the new database is gone.
async fn restore_fresh(
    control: &Control,
    backups: &Backups,
    input: &Input<'_>,
    fresh: &str,
    owner: Option<&str>,
    keep_acl: bool,
    schema_only: bool,
) -> ControlResult<Vec<TableStat>> {
    let admin = admin_config(control)?;
    let client = pg_logical::connect(&admin)
        .await
        .map_err(|e| failed("connecting to the engine", e))?;
    let admin_user = admin.get_user().unwrap_or("postgres").to_string();
    pg_logical::create_database(&client, fresh, owner.unwrap_or(&admin_user))
        .await
        .map_err(|e| failed("making the fresh database", e))?;
    let result = async {
        let bin = bin_dir()?;
        let mut restore =
            pg_logical::restore_command(&bin, &admin, fresh, owner, keep_acl, schema_only)
                .spawn()
                .map_err(|e| failed("starting pg_restore", e))?;
        let mut stdin = restore
            .stdin
            .take()
            .ok_or_else(|| ControlError::internal("pg_restore has no stdin"))?;
        let (expected, fed) = match input {
            Input::Item(item) => {
                let file = super::item_file(item, "dump")?;
                let mut reader = backups.repo.open(&file).await?;
                let fed = async {
                    let copied = tokio::io::copy(&mut reader, &mut stdin).await;
                    drop(stdin);
                    copied.map_err(|e| super::repository::read_error(&file, e).to_string())
                };
                let (fed, restored) =
                    tokio::join!(fed, pg_logical::finish_program(restore, "pg_restore"));
                (
                    stats_from(&item.record),
                    fed.and(restored.map(|_| 0).map_err(|e| e.to_string())),
                )
            }
            Input::Scratch { config, db } => {
                let source = pg_logical::connect(&on_database(config, db))
                    .await
                    .map_err(|e| failed("connecting to the recovered database", e))?;
                source
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
                    .map_err(|e| failed("reading the recovered database", e))?;
                let snapshot: String = source
                    .query_one("SELECT pg_export_snapshot()", &[])
                    .await
                    .map_err(|e| failed("reading the recovered database", e))?
                    .get(0);
                let mut dump = pg_logical::dump_command(&bin, config, db, Some(&snapshot))
                    .spawn()
                    .map_err(|e| failed("starting pg_dump", e))?;
                let stdout = dump
                    .stdout
                    .take()
                    .ok_or_else(|| ControlError::internal("pg_dump has no stdout"))?;
                let fed = async {
                    let mut stdout = stdout;
                    let copied = tokio::io::copy(&mut stdout, &mut stdin).await;
                    drop(stdin);
                    copied.map_err(|e| e.to_string())
                };
                let (fed, dumped, restored, stats) = tokio::join!(
                    fed,
                    pg_logical::finish_program(dump, "pg_dump"),
                    pg_logical::finish_program(restore, "pg_restore"),
                    pg_logical::table_stats(&source)
                );
                let stats = stats.map_err(|e| failed("counting the recovered tables", e))?;
                let outcome = fed
                    .and(dumped.map_err(|e| e.to_string()))
                    .and(restored.map(|_| 0).map_err(|e| e.to_string()));
                (stats, outcome)
            }
        };
        if let Err(why) = fed {
            return Err(ControlError::Failed {
                code: "RESTORE_FAILED",
                message: format!("the data did not restore: {why}"),
                details: None,
            });
        }
        let fresh_client = pg_logical::connect(&on_database(&admin, fresh))
            .await
            .map_err(|e| failed("connecting to the restored database", e))?;
        let found = pg_logical::table_stats(&fresh_client)
            .await
            .map_err(|e| failed("counting the restored tables", e))?;
        // Without rows, every recorded table is there and empty.
        let expected = match schema_only {
            true => expected
                .into_iter()
                .map(|t| {
                    let empty = found.iter().find(|f| f.table == t.table && f.rows == 0);
                    TableStat {
                        rows: 0,
                        checksum: empty.map(|f| f.checksum.clone()).unwrap_or(t.checksum),
                        table: t.table,
                    }
                })
                .collect(),
            false => expected,
        };
        pg_logical::compare_stats(&expected, &found).map_err(|difference| {
            ControlError::Failed {
                code: "RESTORE_CHECK_FAILED",
                message: format!("the restored data differs from what was recorded: {difference}"),
                details: None,
            }
        })?;
        Ok(found)
    }
    .await;
    if result.is_err() {
        let _ = pg_logical::drop_database(&client, fresh).await;
    }
    result
}

/// The drill: the dump restored into a scratch database, compared with
/// the recorded stats, then dropped.
pub(super) async fn check(
    control: &Control,
    backups: &Backups,
    item: &RestorePointItemRow,
) -> ControlResult<String> {
    let scratch = format!("mds_drill_{}", ulid::Ulid::new().to_string().to_lowercase());
    let found = restore_fresh(
        control,
        backups,
        &Input::Item(item),
        &scratch,
        None,
        false,
        false,
    )
    .await?;
    if let Ok(client) = pg_logical::connect(&admin_config(control)?).await {
        let _ = pg_logical::drop_database(&client, &scratch).await;
    }
    let rows: i64 = found.iter().map(|s| s.rows).sum();
    Ok(format!(
        "{} tables, {rows} rows, every table's checksum as recorded",
        found.len()
    ))
}

/// A restored and checked copy of a database, waiting for its switch.
pub(super) struct Prepared {
    fresh: String,
    suffix: String,
    found: Vec<TableStat>,
}

/// Restores `input` into a fresh database owned by `target`'s role and
/// checks it; the live database is not touched.
pub(super) async fn prepare(
    control: &Control,
    backups: &Backups,
    input: &Input<'_>,
    target: &BindingRow,
    same_binding: bool,
) -> ControlResult<Prepared> {
    let suffix = ulid::Ulid::new().to_string().to_lowercase();
    let fresh = format!("mds_restore_{suffix}");
    let role = target.resource_name.as_str();
    let found = restore_fresh(
        control,
        backups,
        input,
        &fresh,
        Some(role),
        same_binding,
        false,
    )
    .await?;
    Ok(Prepared {
        fresh,
        suffix,
        found,
    })
}

/// Drops a prepared copy that will not be switched in.
pub(super) async fn discard(control: &Control, prepared: Prepared) {
    if let Ok(admin) = admin_config(control) {
        if let Ok(client) = pg_logical::connect(&admin).await {
            let _ = pg_logical::drop_database(&client, &prepared.fresh).await;
        }
    }
}

/// Swaps a prepared copy in under `target`'s name (same role, same
/// credentials). Returns the connections ended and what was checked.
pub(super) async fn switch(
    control: &Control,
    prepared: Prepared,
    target: &BindingRow,
) -> ControlResult<(u64, String)> {
    let Prepared {
        fresh,
        suffix,
        found,
    } = prepared;
    let role = target.resource_name.as_str();
    let admin = admin_config(control)?;
    let client = pg_logical::connect(&admin)
        .await
        .map_err(|e| failed("connecting to the engine", e))?;
    let aside = format!("mds_replaced_{suffix}");
    // Pooled connections first: the pooler holds new clients of the
    // database until the swap is done, and none keeps a server connection
    // to the data being replaced.
    let pooler = control.reconciler()?.pooler().cloned();
    if let Some(pooler) = &pooler {
        pooler
            .close(role)
            .await
            .map_err(|e| failed("closing the pooled connections", e))?;
    }
    let swapped = pg_logical::swap_database(&client, role, &fresh, &aside).await;
    if let Some(pooler) = &pooler {
        if let Err(e) = pooler.resume(role).await {
            tracing::warn!(database = role, error = %e, "could not let pooled clients in again");
        }
    }
    let terminated = match swapped {
        Ok(n) => n,
        Err(e) => {
            let _ = pg_logical::drop_database(&client, &fresh).await;
            return Err(failed("switching to the restored database", e));
        }
    };
    // The replaced data is in the point taken before this restore.
    if let Err(e) = pg_logical::drop_database(&client, &aside).await {
        tracing::warn!(database = aside, error = %e, "could not drop the replaced database");
    }
    let rows: i64 = found.iter().map(|s| s.rows).sum();
    Ok((
        terminated,
        format!(
            "{} tables, {rows} rows, every table's row count and checksum as recorded",
            found.len()
        ),
    ))
}

/// [`prepare`] then [`switch`].
pub(super) async fn restore(
    control: &Control,
    backups: &Backups,
    input: Input<'_>,
    target: &BindingRow,
    same_binding: bool,
) -> ControlResult<(u64, String)> {
    let prepared = prepare(control, backups, &input, target, same_binding).await?;
    switch(control, prepared, target).await
}

/// The engine's databases whose names start with one of `prefixes`.
async fn databases_named(
    client: &tokio_postgres::Client,
    prefixes: &[&str],
) -> ControlResult<Vec<String>> {
    let patterns: Vec<String> = prefixes
        .iter()
        .map(|p| format!("{}%", p.replace('_', "\\_")))
        .collect();
    Ok(client
        .query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE ANY($1)",
            &[&patterns],
        )
        .await
        .map_err(|e| failed("listing databases", e))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The role that owns the objects inside template copies: it cannot log
/// in and owns no database, so `REASSIGN OWNED` in a clone moves exactly
/// that clone's objects to its binding's role.
const TEMPLATE_ROLE: &str = "mds_template_objects";

/// A template copy's database name: by item, lowercase.
fn template_name(item_id: &str) -> String {
    format!("mds_tmpl_{}", ulid_of(item_id))
}

/// The ULID of an id (`rpi_01J...` gives `01j...`): short enough for a
/// database name.
fn ulid_of(id: &str) -> String {
    id.rsplit('_').next().unwrap_or(id).to_lowercase()
}

/// The idle copy of `item`'s database that branches clone with `CREATE
/// DATABASE ... TEMPLATE`: made once, by restoring the dump and checking
/// it against the record like any restore, then kept (see
/// [`prune_templates`]). Built under another name and renamed when
/// checked, so a killed build is never taken for a template.
async fn template(
    control: &Control,
    backups: &Backups,
    item: &RestorePointItemRow,
) -> ControlResult<String> {
    let admin = admin_config(control)?;
    let client = pg_logical::connect(&admin)
        .await
        .map_err(|e| failed("connecting to the engine", e))?;
    let name = template_name(&item.id);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|e| failed("looking for the template copy", e))?
        .is_some();
    if exists {
        return Ok(name);
    }
    client
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {role} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             DO $$ BEGIN GRANT {role} TO CURRENT_USER; EXCEPTION WHEN others THEN NULL; END $$;",
            role = ident(TEMPLATE_ROLE)
        ))
        .await
        .map_err(|e| failed("making the template role", e))?;
    let building = format!("mds_tmplnew_{}", ulid_of(&item.id));
    let _ = pg_logical::drop_database(&client, &building).await;
    super::check_files(backups, item).await?;
    let input = Input::Item(item);
    restore_fresh(
        control,
        backups,
        &input,
        &building,
        Some(TEMPLATE_ROLE),
        false,
        false,
    )
    .await?;
    let admin_user = admin.get_user().unwrap_or("postgres");
    let finished = client
        .batch_execute(&format!(
            "ALTER DATABASE {b} OWNER TO {a}; ALTER DATABASE {b} RENAME TO {t}",
            b = ident(&building),
            a = ident(admin_user),
            t = ident(&name)
        ))
        .await;
    if let Err(e) = finished {
        let _ = pg_logical::drop_database(&client, &building).await;
        return Err(failed("keeping the template copy", e));
    }
    Ok(name)
}

/// Drops the template copies no branch will use: of points that are
/// gone, and all but the newest of each binding. Then builds that a
/// killed run left.
pub(super) async fn prune_templates(control: &Control) -> ControlResult<()> {
    let client = pg_logical::connect(&admin_config(control)?)
        .await
        .map_err(|e| failed("connecting to the engine", e))?;
    let names = databases_named(&client, &["mds_tmpl_", "mds_tmplnew_"]).await?;
    let ids: Vec<String> = names
        .iter()
        .filter_map(|n| n.strip_prefix("mds_tmpl_"))
        .map(|ulid| format!("rpi_{}", ulid.to_uppercase()))
        .collect();
    let mut live = control.store()?.live_items(&ids).await?;
    live.sort_by_key(|item| std::cmp::Reverse(item.2));
    let mut kept: Vec<String> = Vec::new();
    let mut bindings: Vec<String> = Vec::new();
    for (item, binding, _) in live {
        if !bindings.contains(&binding) {
            bindings.push(binding);
            kept.push(template_name(&item));
        }
    }
    for name in names.iter().filter(|n| !kept.contains(n)) {
        if let Err(e) = pg_logical::drop_database(&client, name).await {
            tracing::warn!(database = name, error = %e, "could not drop a template copy");
        }
    }
    Ok(())
}

/// A preview's copy of `item`'s database, in place of `target`'s (empty)
/// one: cloned from the template copy, its objects given to the target's
/// role, `masks` applied, then switched in. Nothing connects to the clone
/// before the switch. Never touches the source's live database.
pub(super) async fn branch(
    control: &Control,
    backups: &Backups,
    item: &RestorePointItemRow,
    target: &BindingRow,
    masks: &[crate::previews::masks::Mask],
) -> ControlResult<(u64, String)> {
    let template = {
        // One template build at a time; pruning runs with no build going.
        let _building = backups.branching.lock().await;
        let template = template(control, backups, item).await?;
        if let Err(e) = prune_templates(control).await {
            tracing::warn!(error = %e, "could not prune template copies");
        }
        template
    };
    let admin = admin_config(control)?;
    let client = pg_logical::connect(&admin)
        .await
        .map_err(|e| failed("connecting to the engine", e))?;
    let role = target.resource_name.as_str();
    let suffix = ulid_of(&target.id);
    // Named by the target: a killed run's clone is dropped here.
    let fresh = format!("mds_branch_{suffix}");
    let _ = pg_logical::drop_database(&client, &fresh).await;
    // The admin's until masked: the role (whose password the preview's
    // variables hold) cannot connect to the clone before.
    let admin_user = admin.get_user().unwrap_or("postgres").to_string();
    pg_logical::create_database_from(&client, &fresh, &admin_user, Some(&template))
        .await
        .map_err(|e| failed("cloning the template copy", e))?;
    let owned = async {
        let clone = pg_logical::connect(&on_database(&admin, &fresh))
            .await
            .map_err(|e| failed("connecting to the clone", e))?;
        clone
            .batch_execute(&format!(
                "REASSIGN OWNED BY {} TO {}",
                ident(TEMPLATE_ROLE),
                ident(role)
            ))
            .await
            .map_err(|e| failed("giving the clone's objects to its role", e))?;
        let masked = crate::previews::masks::apply(&clone, masks)
            .await
            .map_err(|why| ControlError::Failed {
                code: "MASK_FAILED",
                message: why,
                details: None,
            })?;
        drop(clone);
        client
            .batch_execute(&format!(
                "ALTER DATABASE {db} OWNER TO {role}; GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role}",
                db = ident(&fresh),
                role = ident(role)
            ))
            .await
            .map_err(|e| failed("giving the clone to its role", e))?;
        Ok(masked)
    }
    .await;
    let masked = match owned {
        Ok(masked) => masked,
        Err(e) => {
            let _ = pg_logical::drop_database(&client, &fresh).await;
            return Err(e);
        }
    };
    let found = stats_from(&item.record);
    let (tables, rows) = (found.len(), found.iter().map(|s| s.rows).sum::<i64>());
    let prepared = Prepared {
        fresh,
        suffix: ulid::Ulid::new().to_string().to_lowercase(),
        found,
    };
    let (terminated, _) = switch(control, prepared, target).await?;
    let masked = match masked.is_empty() {
        true => String::new(),
        false => format!(
            "; masked {}",
            masked
                .iter()
                .map(|(column, rows)| format!("{column} ({rows} rows)"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Ok((
        terminated,
        format!("{tables} tables, {rows} rows, cloned from the checked copy of the dump{masked}"),
    ))
}

/// The tables of `item`'s dump without their rows, in place of
/// `target`'s database.
pub(super) async fn schema_only(
    control: &Control,
    backups: &Backups,
    item: &RestorePointItemRow,
    target: &BindingRow,
) -> ControlResult<(u64, String)> {
    super::check_files(backups, item).await?;
    let suffix = ulid::Ulid::new().to_string().to_lowercase();
    let fresh = format!("mds_restore_{suffix}");
    let role = target.resource_name.as_str();
    let input = Input::Item(item);
    let found = restore_fresh(control, backups, &input, &fresh, Some(role), false, true).await?;
    let tables = found.len();
    let prepared = Prepared {
        fresh,
        suffix,
        found,
    };
    let (terminated, _) = switch(control, prepared, target).await?;
    Ok((terminated, format!("{tables} tables, schema only")))
}

/// Drops scratch databases a killed run left (drills, restores that did
/// not reach their switch).
pub async fn sweep_scratch_databases(control: &Control) -> ControlResult<Vec<String>> {
    let admin = admin_config(control)?;
    let client = pg_logical::connect(&admin)
        .await
        .map_err(|e| failed("connecting to the engine", e))?;
    // (Template copies, kept or half-built, are `prune_templates`'.)
    let names = databases_named(&client, &["mds_drill_", "mds_restore_", "mds_branch_"]).await?;
    for name in &names {
        let _ = pg_logical::drop_database(&client, name).await;
    }
    Ok(names)
}
