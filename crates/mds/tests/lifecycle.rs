//! The platform's life: restarts keep everything, a killed postgres comes
//! back by itself, a data dir has one server, secrets need their key.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{spawn_server, wait_until, Mds};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::Method;
use serde_json::json;

fn seed(mds: &Mds) -> String {
    mds.post("/api/v1/projects", json!({"name": "keeper"}))
        .expect(201);
    mds.post(
        "/api/v1/projects/keeper/environments",
        json!({"name": "qa"}),
    )
    .expect(201);
    mds.put(
        "/api/v1/projects/keeper/shared-variables",
        json!({"env": "qa", "variables": {"GREETING": "hello world"}}),
    )
    .expect(200);
    mds.key_with(&["projects:read"])
}

fn check_seeded(mds: &Mds, key: &str) {
    let p = mds.get("/api/v1/projects/keeper").expect(200);
    let envs: Vec<&str> = p.data()["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(envs, ["production", "staging", "qa"]);
    let v = mds
        .get("/api/v1/projects/keeper/shared-variables/GREETING/reveal?env=qa")
        .expect(200);
    assert_eq!(v.data()["value"], "hello world");
    mds.call(Method::GET, "/api/v1/projects/keeper", Some(key), None)
        .expect(200);
}

#[test]
fn a_restart_keeps_projects_environments_variables_and_keys() {
    let mut mds = Mds::start();
    let key = seed(&mds);
    let admin_key = mds.admin_key.clone();
    let root = mds.root.clone();
    mds.stop();
    assert!(!mds.data_dir.join("server.json").exists());
    // The managed postgres stopped with it.
    let pid_file = mds.data_dir.join("engines/postgres/data/postmaster.pid");
    assert!(
        !pid_file.exists(),
        "postgres still running after a clean stop"
    );

    let again = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(again.admin_key, admin_key, "the admin key changed");
    assert_eq!(
        again.log().matches("shown once").count(),
        1,
        "the admin key was printed twice"
    );
    check_seeded(&again, &key);
}

#[test]
fn a_killed_postgres_is_restarted_without_help() {
    let mds = Mds::start();
    let key = seed(&mds);
    let pid = mds.postgres_pid();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    // Recovered means: a new postmaster, /healthz back to 200, and writes
    // going through. (Backends of the killed postmaster may still answer for
    // a moment, so a write alone proves nothing.)
    let new_pid = || {
        std::fs::read_to_string(mds.data_dir.join("engines/postgres/data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok())
            .filter(|p| *p != pid)
    };
    let took = wait_until(Duration::from_secs(5), || {
        new_pid().is_some()
            && mds
                .raw()
                .get(format!("{}/healthz", mds.url))
                .send()
                .is_ok_and(|r| r.status() == 200)
            && mds
                .put(
                    "/api/v1/projects/keeper/shared-variables",
                    json!({"env": "qa", "variables": {"AFTER_CRASH": "yes"}}),
                )
                .status
                == 200
    });
    let took = took.unwrap_or_else(|| panic!("not recovered within 5 s\n{}", mds.log()));
    eprintln!("recovered from kill -9 of postgres in {took:?}");
    check_seeded(&mds, &key);
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let mds = Mds::start();
    let mut second = spawn_server(&mds.root, &[], &[]);
    let status = second.wait().unwrap();
    assert!(!status.success());
    assert!(mds.log().contains("another mds server"), "{}", mds.log());
    // The first one is unharmed.
    mds.get("/api/v1/projects").expect(200);
}

#[test]
fn after_mds_is_killed_the_next_start_takes_over_its_postgres() {
    let mut mds = Mds::start();
    let key = seed(&mds);
    let root = mds.root.clone();
    let orphan = mds.postgres_pid();
    mds.kill9();
    assert!(
        kill(Pid::from_raw(orphan as i32), None).is_ok(),
        "postgres should outlive a kill -9 of mds"
    );
    let again = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    check_seeded(&again, &key);
    assert_ne!(again.postgres_pid(), orphan);
}

/// The child of `parent` whose process title contains `role`.
fn child_named(parent: u32, role: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            let ppid = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s[s.rfind(')')? + 1..]
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()
                });
            let title = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            ppid == Some(parent) && String::from_utf8_lossy(&title).contains(role)
        })
}

/// Running, and not a zombie (which holds no shared memory).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .next();
        !matches!(state, None | Some("Z") | Some("X"))
    })
}

// A stop used to kill only the postmaster's group when its shutdown
// checkpoint outlasted the grace (minutes, with hundreds of databases);
// each of its children leads a group of its own, so the checkpointer went
// on holding the shared memory and the next start failed with
// "pre-existing shared memory block is still in use". Here the checkpointer
// is frozen, and mds and its postmaster are killed, leaving just that.
#[test]
fn a_checkpointer_left_by_a_forced_stop_does_not_block_the_next_start() {
    let mut mds = Mds::start();
    let key = seed(&mds);
    let root = mds.root.clone();
    let postmaster = mds.postgres_pid();
    let checkpointer = wait_until(Duration::from_secs(10), || {
        child_named(postmaster, "checkpointer").is_some()
    })
    .and_then(|_| child_named(postmaster, "checkpointer"))
    .expect("the postmaster's checkpointer");
    kill(Pid::from_raw(checkpointer as i32), Signal::SIGSTOP).unwrap();
    mds.kill9();
    kill(Pid::from_raw(postmaster as i32), Signal::SIGKILL).unwrap();

    let began = std::time::Instant::now();
    let again = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    eprintln!("started over the leftovers in {:?}", began.elapsed());
    check_seeded(&again, &key);
    assert!(!alive(checkpointer), "the old checkpointer still runs");
}

#[test]
fn secrets_need_the_master_key_they_were_sealed_with() {
    let mut mds = Mds::start();
    let root = mds.root.clone();
    mds.stop();
    let wrong = "00".repeat(32);
    match Mds::start_in(&root, &[], &[("MDS_MASTER_KEY", &wrong)]) {
        Ok(_) => panic!("started with the wrong master key"),
        Err(log) => assert!(log.contains("master key does not open"), "{log}"),
    }
    let bad = Mds::start_in(&root, &[], &[("MDS_MASTER_KEY", "not-hex")]);
    assert!(bad.err().unwrap().contains("64 hexadecimal"));
}

#[test]
fn an_existing_postgres_can_be_used_and_replicas_share_its_state() {
    // The managed PostgreSQL of a first mds stands in for an operator's
    // existing server; a second mds is pointed at it by URL. Both then serve
    // the same control plane, as replicas behind a load balancer would.
    let first = Mds::start();
    let config = first.superuser_config();
    let url = format!(
        "postgres://mds_admin:{}@127.0.0.1:{}/postgres",
        String::from_utf8_lossy(config.get_password().unwrap()),
        config.get_ports()[0]
    );
    let admin = format!("msk_{}", "A1b2".repeat(10));
    let tmp = tempfile::tempdir().unwrap();
    let second = Mds::start_in(
        tmp.path(),
        &["--postgres-url", &url],
        &[("MDS_ADMIN_API_KEY", &admin)],
    )
    .unwrap_or_else(|log| panic!("{log}"));
    assert!(!second.data_dir.join("admin-api-key").exists());
    assert!(
        !second.data_dir.join("engines/postgres").exists(),
        "no managed postgres in external mode"
    );
    second
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(&admin),
            Some(&json!({"name": "ext"})),
        )
        .expect(201);
    // What one replica wrote, the other serves, with either's keys.
    first.get("/api/v1/projects/ext").expect(200);
    first
        .call(Method::GET, "/api/v1/projects/ext", Some(&admin), None)
        .expect(200);
    second
        .call(
            Method::GET,
            "/api/v1/projects/ext",
            Some(&first.admin_key),
            None,
        )
        .expect(200);
}

#[test]
fn healthz_is_503_until_the_platform_is_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = spawn_server(tmp.path(), &[], &[]);
    let info_path = tmp.path().join("data/server.json");
    // The listener is up before the engine: initdb alone takes longer than
    // this first look.
    wait_until(Duration::from_secs(30), || info_path.exists()).expect("server.json");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info_path).unwrap()).unwrap();
    let url = info["url"].as_str().unwrap().to_string();
    let first = common::answer(
        reqwest::blocking::get(format!("{url}/healthz")).expect("healthz answers while starting"),
    );
    assert_eq!(first.status, 503, "{}", first.body);
    assert_eq!(first.body["status"], "starting");
    let ready = wait_until(Duration::from_secs(60), || {
        reqwest::blocking::get(format!("{url}/healthz")).is_ok_and(|r| r.status() == 200)
    });
    assert!(ready.is_some());
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
}

/// Every binding of `project` runs and production and staging inject
/// `DATABASE_URL`.
fn attached_and_injected(mds: &Mds, project: &str) -> bool {
    let services = mds.get(&format!("/api/v1/projects/{project}/data-services"));
    let Some(services) = services.data().as_array().cloned() else {
        return false;
    };
    !services.is_empty()
        && services.iter().all(|s| {
            s["bindings"]
                .as_array()
                .is_some_and(|b| !b.is_empty() && b.iter().all(|b| b["state"] == "running"))
        })
        && ["production", "staging"]
            .iter()
            .all(|env| mds.resolved_env(project, env).contains_key("DATABASE_URL"))
}

/// How many bindings of `project` a server holds a live lease on.
fn live_leases(config: &tokio_postgres::Config, project: &str) -> i64 {
    common::query(
        config,
        &format!(
            "SELECT count(*) FROM bindings b JOIN data_services s ON s.id = b.service_id
             JOIN projects p ON p.id = s.project_id
             WHERE p.slug = '{project}' AND b.lease_until > now() AND b.state <> b.desired"
        ),
    )[0]
    .get(0)
}

#[test]
fn a_crash_mid_attach_leaves_no_binding_stuck_after_the_restart() {
    // Owned here: each restart replaces the `Mds`, which must not take the
    // data dir with it.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let mut mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    let mut hits = 0;
    // kill -9 while the attach is being provisioned: the dead server's
    // leases must not hold the bindings after the restart. Several delays,
    // since the window is a few tens of milliseconds.
    for (i, delay) in [40u64, 55, 70, 90, 30, 110, 20, 80].into_iter().enumerate() {
        let project = format!("crash{i}");
        mds.post("/api/v1/projects", json!({"name": project}))
            .expect(201);
        let (url, key) = (mds.url.clone(), mds.admin_key.clone());
        let path = format!("/api/v1/projects/{project}/data-services?wait=true");
        let attach = std::thread::spawn(move || {
            let _ = reqwest::blocking::Client::new()
                .post(format!("{url}{path}"))
                .bearer_auth(key)
                .json(&json!({"type": "postgres"}))
                .send();
        });
        std::thread::sleep(Duration::from_millis(delay));
        let superuser = mds.superuser_config();
        mds.kill9();
        let _ = attach.join();
        // The orphaned postgres still answers: was a lease left behind?
        let leased = live_leases(&superuser, &project) > 0;
        mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
        if !leased {
            continue;
        }
        hits += 1;
        let took = wait_until(Duration::from_secs(8), || {
            attached_and_injected(&mds, &project)
        });
        assert!(
            took.is_some(),
            "after a kill -9 {delay} ms into an attach, its bindings stayed stuck: {}\n{}",
            mds.get(&format!("/api/v1/projects/{project}/data-services"))
                .body,
            mds.log()
        );
        eprintln!("kill -9 at {delay} ms: repaired {took:?} after the restart");
    }
    eprintln!("{hits} kills hit a lease");

    // And deterministically: a lease by hand, named for the incarnation
    // that is then killed, on a binding left half-provisioned.
    mds.post("/api/v1/projects", json!({"name": "leased"}))
        .expect(201);
    mds.attach_postgres("leased", json!({"type": "postgres"}));
    let superuser = mds.superuser_config();
    mds.kill9();
    common::query(
        &superuser,
        "UPDATE bindings b SET state = 'provisioning', ready_at = NULL,
             lease_until = now() + interval '120 seconds',
             lease_holder = (SELECT max(id) FROM server_incarnations)
         FROM data_services s JOIN projects p ON p.id = s.project_id
         WHERE s.id = b.service_id AND p.slug = 'leased'",
    );
    let mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    let took = wait_until(Duration::from_secs(8), || {
        attached_and_injected(&mds, "leased")
    });
    assert!(
        took.is_some(),
        "a dead incarnation's lease held: {}",
        mds.log()
    );
}
