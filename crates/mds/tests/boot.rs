//! The boot from the CLI: `mds attach`, `mds env`, `mds run`, `mds psql`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{wait_until, Mds, BIN};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

fn cli(mds: &Mds) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("MIOSA_BASE_URL", &mds.url)
        .env("MIOSA_API_KEY", &mds.admin_key)
        .env_remove("MDS_DATA_DIR")
        .stdin(Stdio::null());
    cmd
}

fn run(mds: &Mds, args: &[&str]) -> (i32, String, String) {
    let out = cli(mds).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn attach_env_run_and_psql_from_the_cli() {
    let mds = Mds::start();
    let (code, _, err) = run(&mds, &["projects", "create", "shop"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&mds, &["attach", "postgres", "-p", "shop"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("running") && out.contains("shop__staging"),
        "{out}"
    );
    assert!(
        out.contains("DATABASE_URL, DATABASE_URL_UNPOOLED, PGHOST"),
        "{out}"
    );
    // Each kind names what it injects (auth is not a database).
    let (code, _, err) = run(&mds, &["projects", "create", "site"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&mds, &["attach", "auth", "-p", "site"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("AUTH_URL") && !out.contains("DATABASE_URL"),
        "{out}"
    );

    // Masked by default, values with --reveal, in every format.
    let (_, out, _) = run(&mds, &["env", "-p", "shop", "-e", "staging"]);
    assert!(
        out.contains("DATABASE_URL") && out.contains("binding (postgres, pooled, transaction)"),
        "{out}"
    );
    assert!(!out.contains("postgresql://"), "a value leaked: {out}");
    let (_, out, _) = run(
        &mds,
        &[
            "env", "-p", "shop", "-e", "staging", "--format", "json", "--reveal",
        ],
    );
    let env: Value = serde_json::from_str(&out).unwrap();
    let url = env["DATABASE_URL"].as_str().unwrap().to_string();
    assert!(url.starts_with("postgresql://shop__staging:"));
    let (_, out, _) = run(
        &mds,
        &[
            "env", "-p", "shop", "-e", "staging", "--format", "dotenv", "--reveal",
        ],
    );
    assert!(out.contains(&format!("DATABASE_URL=\"{url}\"")), "{out}");
    let (_, out, _) = run(
        &mds,
        &[
            "env", "-p", "shop", "-e", "staging", "--format", "shell", "--reveal",
        ],
    );
    assert!(
        out.contains(&format!("export DATABASE_URL='{url}'")),
        "{out}"
    );

    // explain and diff never print values.
    run(
        &mds,
        &[
            "vars",
            "set",
            "-p",
            "shop",
            "-e",
            "staging",
            "PGHOST=db.internal",
        ],
    );
    let (code, out, _) = run(
        &mds,
        &["env", "explain", "-p", "shop", "-e", "staging", "PGHOST"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("from:       shared") && out.contains("overrides:  binding (postgres)"),
        "{out}"
    );
    run(
        &mds,
        &["vars", "unset", "-p", "shop", "-e", "staging", "PGHOST"],
    );
    let (code, out, _) = run(
        &mds,
        &["env", "diff", "-p", "shop", "production", "staging"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("DATABASE_URL") && !out.contains("postgresql://"),
        "{out}"
    );
    let (code, _, err) = run(&mds, &["env", "explain", "-p", "shop", "NOPE"]);
    assert_ne!(code, 0);
    assert!(err.contains("not set"), "{err}");

    // The boot: the command sees the environment; data it writes stays.
    let (code, out, err) = run(
        &mds,
        &[
            "run", "-p", "shop", "-e", "staging", "-E", "GREETING=hi", "--",
            "sh", "-c", "psql -X -tAc 'CREATE TABLE hits (n int); INSERT INTO hits VALUES (42)' \"$DATABASE_URL\" >/dev/null && echo \"$GREETING $MIOSA_ENVIRONMENT $PGDATABASE ${MIOSA_API_KEY:-withheld}\"",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "hi staging shop__staging withheld");
    let (_, out, _) = run(
        &mds,
        &[
            "run",
            "-p",
            "shop",
            "-e",
            "staging",
            "--",
            "sh",
            "-c",
            "psql -X -tAc 'SELECT n FROM hits' \"$DATABASE_URL\"",
        ],
    );
    assert_eq!(out.trim(), "42");
    // Exit codes pass through.
    let (code, _, _) = run(&mds, &["run", "-p", "shop", "--", "sh", "-c", "exit 7"]);
    assert_eq!(code, 7);
    let (code, _, err) = run(&mds, &["run", "-p", "shop", "--", "/no/such/program"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot start"), "{err}");

    // psql on the environment's database.
    let (code, out, err) = run(
        &mds,
        &[
            "psql",
            "-p",
            "shop",
            "-e",
            "staging",
            "--",
            "-X",
            "-tAc",
            "SELECT n FROM hits",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "42");

    // The data service listing, and a delete that wants confirmation.
    let (_, out, _) = run(&mds, &["data", "list", "-p", "shop"]);
    assert!(out.contains("postgres") && out.contains("running"), "{out}");
    let (code, _, err) = run(&mds, &["data", "delete", "postgres", "-p", "shop"]);
    assert_ne!(code, 0);
    assert!(err.contains("--yes"), "{err}");
}

#[test]
fn mds_run_forwards_signals_to_the_command() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", serde_json::json!({"name": "sig"}))
        .expect(201);
    let marker = mds.root.join("got-term");
    let started = mds.root.join("started");
    let script = format!(
        "trap 'echo term > {}; exit 3' TERM; touch {}; while true; do sleep 0.05; done",
        marker.display(),
        started.display()
    );
    let mut child = cli(&mds)
        .args(["run", "-p", "sig", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    // Signal handlers are in place before the command starts.
    assert!(wait_until(Duration::from_secs(10), || started.exists()).is_some());
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "the command's own exit code");
    assert!(wait_until(Duration::from_secs(2), || marker.exists()).is_some());
}

#[test]
fn attach_redis_and_redis_cli_from_the_cli() {
    let mds = Mds::start();
    run(&mds, &["projects", "create", "cache"]);
    let (code, out, err) = run(
        &mds,
        &[
            "attach",
            "redis",
            "-p",
            "cache",
            "--maxmemory",
            "32mb",
            "--eviction",
            "allkeys-lru",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("REDIS_URL") && out.contains("running"),
        "{out}"
    );
    let (code, _, err) = run(
        &mds,
        &[
            "attach",
            "redis",
            "-p",
            "cache",
            "--name",
            "x",
            "--eviction",
            "sometimes",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("eviction"), "{err}");
    let (code, out, err) = run(
        &mds,
        &[
            "redis-cli",
            "-p",
            "cache",
            "-e",
            "staging",
            "--",
            "SET",
            "k",
            "v",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "OK");
    let (_, out, _) = run(
        &mds,
        &[
            "redis-cli",
            "-p",
            "cache",
            "-e",
            "staging",
            "--",
            "GET",
            "k",
        ],
    );
    assert_eq!(out.trim(), "v");
    let (_, out, _) = run(
        &mds,
        &[
            "redis-cli",
            "-p",
            "cache",
            "-e",
            "production",
            "--",
            "GET",
            "k",
        ],
    );
    assert_eq!(out.trim(), "");
    let (_, out, _) = run(
        &mds,
        &[
            "redis-cli",
            "-p",
            "cache",
            "--",
            "CONFIG",
            "GET",
            "maxmemory-policy",
        ],
    );
    assert!(out.contains("NOPERM"), "{out}");
}

#[test]
fn a_standalone_database_attached_from_the_cli_keeps_its_data() {
    let mds = Mds::start();
    let db = mds
        .post(
            "/api/v1/databases?wait=true",
            serde_json::json!({"engine": "postgresql", "name": "orders"}),
        )
        .expect(201);
    assert_eq!(db.data()["project_id"], Value::Null);
    let id = db.data()["id"].as_str().unwrap().to_string();
    let creds = mds
        .get(&format!("/api/v1/databases/{id}/credentials"))
        .expect(200);
    let url = creds.data()["url"].as_str().unwrap().to_string();
    let psql = |url: &str, sql: &str| {
        let out = Command::new("psql")
            .args(["-X", "-tAc", sql, url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    psql(
        &url,
        "CREATE TABLE orders (n int); INSERT INTO orders VALUES (7)",
    );

    let (code, _, err) = run(&mds, &["projects", "create", "shop"]);
    assert_eq!(code, 0, "{err}");
    // Kind and --existing do not go together.
    let (code, _, _) = run(&mds, &["attach", "redis", "--existing", &id, "-p", "shop"]);
    assert_ne!(code, 0);
    let (code, out, err) = run(
        &mds,
        &["attach", "--existing", &id, "-p", "shop", "-e", "staging"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("DATABASE_URL"), "{out}");
    // The staging boot gets it, with the data it had; production does not.
    let (code, out, err) = run(
        &mds,
        &[
            "run",
            "-p",
            "shop",
            "-e",
            "staging",
            "--",
            "sh",
            "-c",
            "psql -X -tAc 'SELECT n FROM orders' \"$DATABASE_URL\"",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "7");
    let (_, out, _) = run(&mds, &["env", "-p", "shop", "-e", "production"]);
    assert!(!out.contains("DATABASE_URL"), "{out}");
    // Attached once; a second project is refused.
    let (code, _, _) = run(&mds, &["projects", "create", "other"]);
    assert_eq!(code, 0);
    let (code, _, err) = run(&mds, &["attach", "--existing", &id, "-p", "other"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("DATABASE_ALREADY_ATTACHED") || err.contains("already attached"),
        "{err}"
    );
}
