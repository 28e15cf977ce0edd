//! Postgres data services against real peers: the `psql` client, the
//! managed engine, and the real binary's reconciler.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{psql, psql_with, wait_until, with_database, Mds};
use reqwest::Method;
use serde_json::json;

#[test]
fn each_environment_gets_its_own_database_reachable_only_with_its_credentials() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "shop"}))
        .expect(201);
    mds.post("/api/v1/projects", json!({"name": "blog"}))
        .expect(201);
    let service = mds.attach_postgres("shop", json!({"type": "postgres"}));
    assert_eq!(service["bindings"].as_array().unwrap().len(), 2);
    mds.attach_postgres("blog", json!({"type": "postgresql"}));

    let prod = mds.resolved_env("shop", "production");
    let staging = mds.resolved_env("shop", "staging");
    let blog = mds.resolved_env("blog", "production");
    for env in [&prod, &staging] {
        for name in [
            "DATABASE_URL",
            "DATABASE_URL_UNPOOLED",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGPASSWORD",
            "PGDATABASE",
            "MIOSA_PROJECT_ID",
            "MIOSA_ENVIRONMENT",
        ] {
            assert!(env.contains_key(name), "{name} missing: {env:?}");
        }
        assert!(env["DATABASE_URL"].starts_with("postgresql://"));
        assert!(env["PGPASSWORD"].len() >= 43, "at least 256 bits");
    }
    assert_eq!(staging["MIOSA_ENVIRONMENT"], "staging");
    assert_ne!(prod["DATABASE_URL"], staging["DATABASE_URL"]);
    assert_ne!(prod["PGUSER"], staging["PGUSER"]);

    // The injected URL works with psql; so do bare PG* variables.
    let (ok, out, err) = psql(&prod["DATABASE_URL"], "SELECT current_database()");
    assert!(ok, "{err}");
    assert_eq!(out, prod["PGDATABASE"]);
    let pg: Vec<(&str, &str)> = ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"]
        .iter()
        .map(|k| (*k, staging[*k].as_str()))
        .collect();
    let (ok, out, err) = psql_with(&[], &pg, "SELECT current_user");
    assert!(ok, "{err}");
    assert_eq!(out, staging["PGUSER"]);

    // Production credentials open nothing but production's database,
    // direct or through the pooler (which has only tenant databases: any
    // other name is "no such database" there; another tenant's is refused
    // by PostgreSQL itself).
    assert_ne!(prod["DATABASE_URL"], prod["DATABASE_URL_UNPOOLED"]);
    for url in ["DATABASE_URL", "DATABASE_URL_UNPOOLED"] {
        for (creds, other_db) in [
            (&prod, staging["PGDATABASE"].as_str()),
            (&staging, prod["PGDATABASE"].as_str()),
            (&prod, blog["PGDATABASE"].as_str()),
            (&blog, prod["PGDATABASE"].as_str()),
            (&prod, "mds_control"),
            (&prod, "postgres"),
            (&prod, "template1"),
        ] {
            let (ok, _, err) = psql(&with_database(&creds[url], other_db), "SELECT 1");
            assert!(!ok, "{} reached {other_db} by {url}", creds["PGUSER"]);
            assert!(
                err.contains("permission denied")
                    || err.contains("does not exist")
                    || err.contains("no such database"),
                "{err}"
            );
        }
    }
    // Wrong password for the right user: refused, both ways.
    for url in ["DATABASE_URL", "DATABASE_URL_UNPOOLED"] {
        let forged = prod[url].replace(&prod["PGPASSWORD"], "not-the-password");
        assert!(!psql(&forged, "SELECT 1").0, "{url}");
    }

    // A tenant role cannot create roles or databases, or read the catalog
    // of credentials.
    for sql in [
        "CREATE ROLE evil LOGIN",
        "CREATE DATABASE evil",
        "ALTER ROLE CURRENT_USER CREATEDB",
        "SELECT rolpassword FROM pg_authid",
    ] {
        let (ok, _, err) = psql(&prod["DATABASE_URL"], sql);
        assert!(!ok, "{sql} succeeded");
        assert!(err.contains("permission denied"), "{sql}: {err}");
    }

    // What is written in staging is not in production.
    assert!(
        psql(
            &staging["DATABASE_URL"],
            "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"
        )
        .0
    );
    let (ok, _, err) = psql(&prod["DATABASE_URL"], "SELECT * FROM t");
    assert!(!ok && err.contains("does not exist"), "{err}");
}

#[test]
fn names_rules_and_a_second_service_of_a_kind() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "app"}))
        .expect(201);
    let base = "/api/v1/projects/app/data-services";
    mds.attach_postgres("app", json!({"type": "postgres"}));
    let r = mds
        .post(base, json!({"type": "postgres"}))
        .expect_error(409, "DATA_SERVICE_NAME_REQUIRED");
    assert_eq!(r.body["error"]["details"]["field"], "name");
    for bad in [
        "x'; DROP DATABASE app__production; --",
        "a;b",
        "a\"b",
        "",
        "-x",
    ] {
        let r = mds
            .post(base, json!({"type": "postgres", "name": bad}))
            .expect_error(422, "VALIDATION_ERROR");
        assert_eq!(r.body["error"]["details"]["field"], "name");
    }
    for bad in ["mysqlx", "mongodb"] {
        mds.post(base, json!({"type": bad}))
            .expect_error(422, "VALIDATION_ERROR");
    }
    mds.post(base, json!({}))
        .expect_error(422, "VALIDATION_ERROR");

    let analytics = mds.attach_postgres("app", json!({"type": "postgres", "name": "analytics"}));
    assert_eq!(analytics["env_prefix"], "ANALYTICS_");
    mds.post(base, json!({"type": "postgres", "name": "analytics"}))
        .expect_error(409, "DATA_SERVICE_NAME_TAKEN");
    let env = mds.resolved_env("app", "production");
    assert!(env.contains_key("ANALYTICS_DATABASE_URL") && env.contains_key("ANALYTICS_PGHOST"));
    assert_ne!(env["ANALYTICS_DATABASE_URL"], env["DATABASE_URL"]);
    assert!(psql(&env["ANALYTICS_DATABASE_URL"], "SELECT 1").0);

    // Bound to one environment only.
    let only = mds.attach_postgres(
        "app",
        json!({"type": "postgres", "name": "cache-db", "environment": "staging"}),
    );
    assert_eq!(only["bindings"].as_array().unwrap().len(), 1);
    assert!(mds
        .resolved_env("app", "staging")
        .contains_key("CACHE_DB_DATABASE_URL"));
    assert!(!mds
        .resolved_env("app", "production")
        .contains_key("CACHE_DB_DATABASE_URL"));

    // A shared variable may override an injected name, and says so.
    mds.put(
        "/api/v1/projects/app/shared-variables",
        json!({"env": "staging", "variables": {"PGHOST": "db.example.com"}}),
    )
    .expect(200);
    let resolved = mds.get("/api/v1/projects/app/env?env=staging").expect(200);
    let pghost = resolved.data()["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "PGHOST")
        .unwrap()
        .clone();
    assert_eq!(pghost["source"]["layer"], "shared");
    assert_eq!(pghost["overridden"][0]["layer"], "binding");
    assert!(pghost.get("value").is_none(), "no value without reveal");

    // A service's own variables form the service layer of its boot, with
    // references resolved.
    let services = mds.get("/api/v1/projects/app/services").expect(200);
    let postgres_id = services.data()[0]["id"].as_str().unwrap().to_string();
    mds.put(
        &format!("/api/v1/services/{postgres_id}/variables?env=staging"),
        json!({"variables": {"APP_URL": "${{postgres.DATABASE_URL}}?app=1", "PGHOST": "override"}}),
    )
    .expect(200);
    let boot = mds
        .get("/api/v1/projects/app/env?env=staging&service=postgres&reveal=true")
        .expect(200);
    let find = |name: &str| {
        boot.data()["variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()
            .clone()
    };
    let staging = mds.resolved_env("app", "staging");
    assert_eq!(
        find("APP_URL")["value"],
        format!("{}?app=1", staging["DATABASE_URL"])
    );
    assert_eq!(find("APP_URL")["source"]["layer"], "service");
    assert_eq!(find("PGHOST")["value"], "override");
    let pghost = find("PGHOST");
    let layers: Vec<&str> = pghost["overridden"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["layer"].as_str().unwrap())
        .collect();
    assert_eq!(layers, ["shared", "binding"]);

    // Prometheus metrics count bindings and requests, and hold no secret.
    let metrics = mds
        .raw()
        .get(format!("{}/metrics", mds.url))
        .send()
        .unwrap();
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text().unwrap();
    assert!(
        text.contains("mds_bindings{kind=\"postgres\",state=\"running\"} 5"),
        "{text}"
    );
    assert!(text.contains("mds_postgres_up 1"), "{text}");
    let client_errors: u64 = text
        .lines()
        .find(|l| l.starts_with("mds_http_requests_total{class=\"4xx\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(client_errors >= 9, "{text}");
    assert!(!text.contains("postgresql://"));

    // Revealing the environment takes env:reveal.
    let plain = mds.key_with(&["env:read", "projects:read"]);
    mds.call(
        Method::GET,
        "/api/v1/projects/app/env?reveal=true",
        Some(&plain),
        None,
    )
    .expect_error(403, "insufficient_scope");
}

#[test]
fn deleting_data_is_explicit_and_never_a_side_effect() {
    let mut mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "keep"}))
        .expect(201);
    mds.attach_postgres("keep", json!({"type": "postgres"}));
    mds.post("/api/v1/projects/keep/environments", json!({"name": "qa"}))
        .expect(201);
    // A new environment gets its own, empty database.
    let qa_ready = wait_until(Duration::from_secs(20), || {
        mds.resolved_env("keep", "qa").contains_key("DATABASE_URL")
    });
    assert!(qa_ready.is_some(), "qa never got a database");
    let prod = mds.resolved_env("keep", "production");
    let qa = mds.resolved_env("keep", "qa");
    assert!(
        psql(
            &prod["DATABASE_URL"],
            "CREATE TABLE orders (id int); INSERT INTO orders VALUES (7)"
        )
        .0
    );
    let (ok, _, err) = psql(&qa["DATABASE_URL"], "SELECT * FROM orders");
    assert!(!ok && err.contains("does not exist"), "{err}");

    // Nothing is deleted without asking for it.
    mds.delete("/api/v1/projects/keep")
        .expect_error(409, "PROJECT_HAS_DATA_SERVICES");
    mds.delete("/api/v1/projects/keep/environments/qa")
        .expect_error(409, "ENVIRONMENT_HAS_DATA");
    mds.delete("/api/v1/projects/keep/data-services/postgres")
        .expect_error(409, "CONFIRMATION_REQUIRED");
    assert_eq!(psql(&prod["DATABASE_URL"], "SELECT id FROM orders").1, "7");

    // Data survives an mds restart and a kill -9 of mds.
    let root = mds.root.clone();
    mds.stop();
    let mut mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(
        mds.resolved_env("keep", "production"),
        prod,
        "credentials changed"
    );
    assert_eq!(psql(&prod["DATABASE_URL"], "SELECT id FROM orders").1, "7");
    mds.kill9();
    let mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(psql(&prod["DATABASE_URL"], "SELECT id FROM orders").1, "7");

    // An explicit purge of an environment drops only its data.
    mds.delete("/api/v1/projects/keep/environments/qa?purge=true")
        .expect(200);
    assert!(!psql(&qa["DATABASE_URL"], "SELECT 1").0);
    assert!(psql(&prod["DATABASE_URL"], "SELECT 1").0);

    // Confirmed delete of the service drops its databases and roles.
    mds.delete("/api/v1/projects/keep/data-services/postgres?confirm=postgres")
        .expect(200);
    let gone = wait_until(Duration::from_secs(20), || {
        mds.get("/api/v1/projects/keep/data-services")
            .data()
            .as_array()
            .unwrap()
            .is_empty()
    });
    assert!(gone.is_some());
    let (ok, _, err) = psql(&prod["DATABASE_URL"], "SELECT 1");
    assert!(
        !ok && (err.contains("does not exist") || err.contains("authentication failed")),
        "{err}"
    );
    let roles = common::query(
        &mds.superuser_config(),
        "SELECT rolname FROM pg_roles WHERE rolname LIKE 'keep\\_\\_%'",
    );
    assert!(roles.is_empty());
    mds.delete("/api/v1/projects/keep").expect(200);
}

#[test]
fn the_reconciler_repairs_what_a_crash_left_half_done() {
    let mut mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "fix"}))
        .expect(201);
    mds.attach_postgres("fix", json!({"type": "postgres"}));
    let env = mds.resolved_env("fix", "production");
    let superuser = mds.superuser_config();
    // As if mds died after writing desired state, before (or while)
    // creating the database: the row says provisioning, the engine lacks it.
    common::query(
        &superuser,
        &format!("DROP DATABASE {} WITH (FORCE)", env["PGDATABASE"]),
    );
    common::query(
        &superuser,
        "UPDATE bindings SET state = 'provisioning', ready_at = NULL",
    );
    let root = mds.root.clone();
    mds.stop();
    let mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    let repaired = wait_until(Duration::from_secs(20), || {
        mds.get("/api/v1/projects/fix/data-services").data()[0]["state"] == "running"
    });
    assert!(repaired.is_some(), "{}", mds.log());
    assert_eq!(mds.resolved_env("fix", "production"), env);
    assert!(psql(&env["DATABASE_URL"], "SELECT 1").0);
}

#[test]
fn twenty_concurrent_attaches_all_run_with_no_duplicate_roles() {
    let mds = Mds::start();
    for i in 0..20 {
        mds.post("/api/v1/projects", json!({"name": format!("p{i}")}))
            .expect(201);
    }
    let answers: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let mds = &mds;
                scope.spawn(move || {
                    mds.post(
                        &format!("/api/v1/projects/p{i}/data-services?wait=true"),
                        json!({"type": "postgres"}),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for answer in answers {
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert_eq!(answer.data()["state"], "running", "{}", answer.body);
    }
    let roles = common::query(
        &mds.superuser_config(),
        "SELECT rolname, count(*) FROM pg_roles WHERE rolname LIKE 'p%\\_\\_%' GROUP BY rolname",
    );
    assert_eq!(roles.len(), 40);
    for row in roles {
        assert_eq!(row.get::<_, i64>(1), 1);
    }
}

#[test]
fn databases_lifecycle_credentials_stop_and_start() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "life"}))
        .expect(201);
    mds.post(
        "/api/v1/databases",
        json!({"engine": "mysql", "project_id": "life"}),
    )
    .expect_error(422, "VALIDATION_ERROR");
    // An environment names a project's: without one it is a mistake.
    mds.post(
        "/api/v1/databases",
        json!({"engine": "postgresql", "environment": "staging"}),
    )
    .expect_error(422, "VALIDATION_ERROR");
    let db = mds
        .post(
            "/api/v1/databases?wait=true",
            json!({"engine": "postgres", "name": "main", "project_id": "life", "size": "small"}),
        )
        .expect(201);
    let id = db.data()["id"].as_str().unwrap().to_string();
    assert_eq!(db.data()["engine"], "postgresql");
    assert_eq!(db.data()["connection_test"]["status"], "ok");
    let creds = mds
        .get(&format!("/api/v1/databases/{id}/credentials"))
        .expect(200);
    let url = creds.data()["url"].as_str().unwrap().to_string();
    assert_eq!(creds.data()["environment"], "production");
    assert!(psql(&url, "SELECT 1").0);
    let staging = mds
        .get(&format!(
            "/api/v1/databases/{id}/credentials?environment=staging"
        ))
        .expect(200);
    assert_ne!(staging.data()["url"], url.as_str());
    let plain = mds.key_with(&["projects:read"]);
    mds.call(
        Method::GET,
        &format!("/api/v1/databases/{id}/credentials"),
        Some(&plain),
        None,
    )
    .expect_error(403, "insufficient_scope");

    // Stop: logins refused; start: back, same credentials, data kept.
    // The URL goes through the pooler, whose copy of the role's SCRAM
    // verifier stays valid: converging again keeps the stored verifier.
    let database = creds.data()["database"].as_str().unwrap().to_string();
    let verifier = || {
        common::query(
            &mds.superuser_config(),
            &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{database}'"),
        )[0]
        .get::<_, String>(0)
    };
    let first_verifier = verifier();
    assert!(
        psql(
            &url,
            "CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)"
        )
        .0
    );
    let stopped = mds
        .post(&format!("/api/v1/databases/{id}/stop"), json!({}))
        .expect(200);
    assert_eq!(stopped.data()["state"], "stopped");
    assert!(!psql(&url, "SELECT 1").0);
    mds.get(&format!("/api/v1/databases/{id}/credentials"))
        .expect_error(409, "DATABASE_NOT_RUNNING");
    let started = mds
        .post(&format!("/api/v1/databases/{id}/start"), json!({}))
        .expect(200);
    assert_eq!(started.data()["state"], "running");
    assert_eq!(psql(&url, "SELECT x FROM kept").1, "1");
    mds.post(&format!("/api/v1/databases/{id}/restart"), json!({}))
        .expect(200);
    assert!(psql(&url, "SELECT 1").0);
    assert_eq!(verifier(), first_verifier);

    let logs = mds
        .get(&format!("/api/v1/databases/{id}/logs?lines=50"))
        .expect(200);
    assert!(!logs.data()["logs"].as_array().unwrap().is_empty());
    let listed = mds.get("/api/v1/databases?project_id=life").expect(200);
    assert_eq!(listed.data().as_array().unwrap().len(), 1);

    mds.delete(&format!("/api/v1/databases/{id}")).expect(200);
    let gone = wait_until(Duration::from_secs(20), || {
        mds.get(&format!("/api/v1/databases/{id}")).status == 404
    });
    assert!(
        gone.is_some(),
        "{}\n{}",
        mds.get(&format!("/api/v1/databases/{id}")).body,
        mds.log()
    );
    assert!(!psql(&url, "SELECT 1").0);
}

#[test]
fn spare_databases_are_claimed_refilled_and_closed_to_tenants() {
    let mds = Mds::start();
    let superuser = mds.superuser_config();
    let spares = || {
        common::query(
            &superuser,
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'mds\\_spare\\_%'",
        )
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
    };
    let ready = wait_until(Duration::from_secs(20), || spares().len() == 4);
    assert!(ready.is_some(), "spares: {:?}\n{}", spares(), mds.log());
    let before = spares();
    mds.post("/api/v1/projects", json!({"name": "fast"}))
        .expect(201);
    mds.attach_postgres("fast", json!({"type": "postgres"}));
    let after = spares();
    let claimed = before.iter().filter(|s| !after.contains(s)).count();
    assert!(claimed >= 1, "no spare was used: {before:?} -> {after:?}");
    // Refilled, and no spare role is left without its database.
    let refilled = wait_until(Duration::from_secs(20), || spares().len() == 4);
    assert!(refilled.is_some(), "spares: {:?}\n{}", spares(), mds.log());
    let orphans = common::query(
        &superuser,
        "SELECT 1 FROM pg_roles r WHERE rolname LIKE 'mds\\_spare\\_%'
           AND NOT EXISTS (SELECT 1 FROM pg_database d WHERE d.datdba = r.oid)",
    );
    assert!(orphans.is_empty());
    // A claimed spare is an ordinary, private binding database.
    let env = mds.resolved_env("fast", "production");
    assert_eq!(
        psql(&env["DATABASE_URL"], "SELECT current_database()").1,
        "fast__production"
    );
    for spare in spares() {
        let (ok, _, err) = psql(
            &with_database(&env["DATABASE_URL_UNPOOLED"], &spare),
            "SELECT 1",
        );
        assert!(!ok && err.contains("permission denied"), "{err}");
        // The pooler serves binding databases only.
        let (ok, _, err) = psql(&with_database(&env["DATABASE_URL"], &spare), "SELECT 1");
        assert!(!ok && err.contains("no such database"), "{err}");
    }
}

#[test]
fn a_failed_binding_shows_its_reason_and_is_retried() {
    // No spares, so the attach must CREATE DATABASE; a session held open on
    // template1 makes that fail until it closes.
    let mds = Mds::start_with(&["--postgres-spares", "0"], &[]);
    let mut template = mds.superuser_config();
    template.dbname("template1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (blocker, conn) = runtime
        .block_on(template.connect(tokio_postgres::NoTls))
        .unwrap();
    let conn_task = runtime.spawn(conn);

    mds.post("/api/v1/projects", json!({"name": "flaky"}))
        .expect(201);
    mds.post(
        "/api/v1/projects/flaky/data-services",
        json!({"type": "postgres"}),
    )
    .expect(201);
    let failing = wait_until(Duration::from_secs(20), || {
        mds.get("/api/v1/projects/flaky/data-services").data()[0]["state"] == "error"
    });
    assert!(failing.is_some());
    let service = mds.get("/api/v1/projects/flaky/data-services").data()[0].clone();
    // The service is in error as soon as one binding is; the other may
    // not have had its first attempt yet.
    let reasons: Vec<&str> = service["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["last_error"].as_str())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("template1")), "{service}");
    // Not injected while failing, and credentials say why.
    let id = service["id"].as_str().unwrap();
    mds.get(&format!("/api/v1/databases/{id}/credentials"))
        .expect_error(409, "DATABASE_NOT_RUNNING");
    let pending = mds.get("/api/v1/projects/flaky/env").expect(200);
    assert!(!pending.data()["pending"].as_array().unwrap().is_empty());

    drop(blocker);
    runtime.block_on(conn_task).unwrap().ok();
    let healed = wait_until(Duration::from_secs(30), || {
        mds.get("/api/v1/projects/flaky/data-services").data()[0]["state"] == "running"
    });
    assert!(healed.is_some(), "{}", mds.log());
    let env = mds.resolved_env("flaky", "production");
    assert!(psql(&env["DATABASE_URL"], "SELECT 1").0);
}

#[test]
fn a_database_dropped_behind_mds_back_is_noticed_and_recreated() {
    let mds = Mds::start_with(&["--drift-check-secs", "1"], &[]);
    mds.post("/api/v1/projects", json!({"name": "drift"}))
        .expect(201);
    let service = mds.attach_postgres("drift", json!({"type": "postgres"}));
    let env = mds.resolved_env("drift", "production");
    common::query(
        &mds.superuser_config(),
        &format!("DROP DATABASE {} WITH (FORCE)", env["PGDATABASE"]),
    );
    // Through the pooler a client waits for a server connection
    // (pgbouncer retries its login) and is served once the drift check has
    // recreated the database. (Whether a direct login sees the loss first
    // is a race with the check, every second here: the log below is what
    // proves it was noticed.)
    let repaired = wait_until(Duration::from_secs(20), || {
        psql(&env["DATABASE_URL"], "SELECT 1").0
    });
    assert!(repaired.is_some(), "{}", mds.log());
    assert!(psql(&env["DATABASE_URL_UNPOOLED"], "SELECT 1").0);
    let id = service["id"].as_str().unwrap();
    let logs = mds.get(&format!("/api/v1/databases/{id}/logs")).expect(200);
    assert!(
        logs.data()["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["stream"] == "drift"),
        "{}",
        logs.body
    );
}

#[test]
fn a_purge_removes_services_whose_environment_went_first() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "gone"}))
        .expect(201);
    mds.post("/api/v1/projects/gone/environments", json!({"name": "qa"}))
        .expect(201);
    mds.attach_postgres("gone", json!({"type": "postgres", "environment": "qa"}));
    // The only environment it was bound in is purged: a service with no
    // binding is left.
    mds.delete("/api/v1/projects/gone/environments/qa?purge=true")
        .expect(200);
    mds.delete("/api/v1/projects/gone")
        .expect_error(409, "PROJECT_HAS_DATA_SERVICES");
    mds.delete("/api/v1/projects/gone?purge=true").expect(200);
    mds.get("/api/v1/projects/gone")
        .expect_error(404, "NOT_FOUND");
}

#[test]
fn a_kind_this_server_does_not_know_is_an_error_never_an_action() {
    let mds = Mds::start_with(&["--drift-check-secs", "1"], &[]);
    mds.post("/api/v1/projects", json!({"name": "shop"}))
        .expect(201);
    mds.attach_postgres("shop", json!({"type": "postgres"}));
    let env = mds.resolved_env("shop", "production");
    let url = env["DATABASE_URL"].clone();
    assert_eq!(env["PGDATABASE"], "shop__production");
    assert!(
        psql(
            &url,
            "CREATE TABLE orders (id int); INSERT INTO orders VALUES (7)"
        )
        .0
    );
    // A session of the tenant that nothing below may close.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (session, conn) = runtime
        .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
        .unwrap();
    let conn_task = runtime.spawn(conn);

    // A service of a kind from a newer version (or a hand edit), in another
    // project, whose binding bears the same resource name as shop's
    // Postgres database.
    mds.post("/api/v1/projects", json!({"name": "other"}))
        .expect(201);
    let superuser = mds.superuser_config();
    let service = "ds_01J0000000000000000000MYSQ";
    common::query(
        &superuser,
        &format!(
            "INSERT INTO data_services (id, project_id, kind, name, env_prefix)
             SELECT '{service}', id, 'mysql', 'legacy', '' FROM projects WHERE slug = 'other'"
        ),
    );
    common::query(
        &superuser,
        &format!(
            "INSERT INTO bindings (id, service_id, environment_id, resource_name, sealed_password,
                 kind, state, desired, ready_at)
             SELECT 'bnd_01J0000000000000000000MYSQ', '{service}', e.id, 'shop__production',
                 '\\x00', 'mysql', 'running', 'running', now()
             FROM environments e JOIN projects p ON p.id = e.project_id
             WHERE p.slug = 'other' AND e.slug = 'production'"
        ),
    );

    // A restart names the kind and closes nothing.
    let restart = mds.post(&format!("/api/v1/databases/{service}/restart"), json!({}));
    assert!(restart.status >= 400, "{}", restart.body);
    let message = restart.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("mysql"), "{}", restart.body);

    // A purge of its project fails and drops nothing.
    let purge = mds.delete("/api/v1/projects/other?purge=true");
    assert!(purge.status >= 400, "{}", purge.body);

    // A confirmed delete is recorded; the reconciler's passes (and the
    // drift check) record the error on the binding and do nothing else.
    mds.delete("/api/v1/projects/other/data-services/legacy?confirm=legacy")
        .expect(200);
    let recorded = wait_until(Duration::from_secs(20), || {
        let services = mds.get("/api/v1/projects/other/data-services");
        services.data()[0]["bindings"]
            .as_array()
            .is_some_and(|bindings| {
                bindings.iter().any(|b| {
                    b["state"] == "error"
                        && b["last_error"]
                            .as_str()
                            .is_some_and(|e| e.contains("unknown data-service kind \"mysql\""))
                })
            })
    });
    assert!(
        recorded.is_some(),
        "{}",
        mds.get("/api/v1/projects/other/data-services").body
    );
    // Another pass or two, and a drift check, for good measure.
    std::thread::sleep(Duration::from_secs(2));

    assert_eq!(psql(&url, "SELECT id FROM orders").1, "7");
    let alive = runtime.block_on(session.simple_query("SELECT 1"));
    assert!(alive.is_ok(), "the tenant's session was closed: {alive:?}");
    let binding = mds.get("/api/v1/projects/shop/data-services").data()[0]["bindings"][0].clone();
    assert_eq!(binding["state"], "running", "{binding}");
    drop(session);
    let _ = runtime.block_on(conn_task);
}
