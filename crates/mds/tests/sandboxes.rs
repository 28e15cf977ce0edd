//! Sandboxes across a crash of mds: nothing they ran survives it, and the
//! next command after a restart boots them again.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::process::Command;
use std::time::Duration;

use common::{wait_until, Mds};
use serde_json::json;

fn processes_matching(pattern: &str) -> String {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_crash_of_mds_leaves_no_sandbox_process_and_a_restart_boots_them_again() {
    let mut mds = Mds::start();
    let created = mds.post("/api/v1/sandboxes", json!({ "env": { "MARK": "one" } }));
    let created = created.expect(201);
    let id = created.data()["id"].as_str().unwrap().to_string();
    assert_eq!(created.data()["state"], "running");

    // A long command, then kill -9 of mds while it runs.
    let url = format!("{}/api/v1/sandboxes/{id}/exec", mds.url);
    let key = mds.admin_key.clone();
    let marker = format!("sleep 4{}", std::process::id());
    let command = format!("echo kept > note; {marker}");
    let runner = std::thread::spawn(move || {
        let _ = reqwest::blocking::Client::new()
            .post(url)
            .bearer_auth(key)
            .json(&json!({ "command": command, "timeout": 600 }))
            .timeout(Duration::from_secs(30))
            .send();
    });
    wait_until(Duration::from_secs(10), || {
        !processes_matching(&marker).is_empty()
    })
    .expect("the command started");
    let root = mds.root.clone();
    // Its route out (a sandbox of no project may reach the outside), when
    // this host has one: a pasta that outlives a kill -9 of mds.
    let egress = root.join("data/sandboxes/.netns");
    let egress = egress.to_string_lossy().into_owned();
    let pasta_before = processes_matching(&egress);
    let host_routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    if host_routes
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"))
    {
        assert!(
            !pasta_before.is_empty(),
            "no pasta for a sandbox with egress"
        );
    }
    mds.kill9();
    runner.join().unwrap();
    wait_until(Duration::from_secs(5), || {
        processes_matching(&marker).is_empty()
    })
    .unwrap_or_else(|| panic!("left running: {}", processes_matching(&marker)));

    // A workspace whose sandbox is gone is removed at start.
    let stray = root.join("data/sandboxes/sbx_01STRAY00000000000000000000");
    std::fs::create_dir_all(&stray).unwrap();

    let mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    assert!(!stray.exists());
    // The start ended the pasta the killed run left.
    if !pasta_before.is_empty() {
        let left = processes_matching(&egress);
        assert!(
            pasta_before
                .lines()
                .all(|pid| !left.lines().any(|l| l == pid)),
            "{pasta_before} still runs: {left}"
        );
    }
    let again = mds.get(&format!("/api/v1/sandboxes/{id}")).expect(200);
    assert_eq!(again.data()["state"], "running");
    let ran = mds
        .post(
            &format!("/api/v1/sandboxes/{id}/exec"),
            json!({ "command": "cat note; echo $MARK" }),
        )
        .expect(200);
    assert_eq!(ran.data()["stdout"], "kept\none\n", "{}", ran.body);
    mds.delete(&format!("/api/v1/sandboxes/{id}")).expect(200);
    assert!(!root.join(format!("data/sandboxes/{id}")).exists());
}

#[test]
fn the_cli_creates_runs_and_destroys_sandboxes() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "shop"}))
        .expect(201);
    let (ok, out, err) = mds.cli(&[
        "sandbox",
        "create",
        "-p",
        "shop",
        "--name",
        "dev",
        "-E",
        "GREETING=hi",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("dev") && out.contains("staging"), "{out}");
    let (ok, out, _) = mds.cli(&[
        "sandbox",
        "exec",
        "dev",
        "--",
        "echo $GREETING $MIOSA_ENVIRONMENT",
    ]);
    assert!(ok);
    assert_eq!(out.trim(), "hi staging");
    // The command's exit code is the CLI's.
    let status = Command::new(common::BIN)
        .args(["sandbox", "exec", "dev", "--", "exit 7"])
        .env("MIOSA_BASE_URL", &mds.url)
        .env("MIOSA_API_KEY", &mds.admin_key)
        .env_remove("MDS_DATA_DIR")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7));
    let (ok, out, _) = mds.cli(&["sandbox", "list", "-p", "shop"]);
    assert!(ok && out.contains("running"), "{out}");
    let (ok, out, err) = mds.cli(&["sandbox", "destroy", "dev"]);
    assert!(ok, "{err}");
    assert!(out.contains("destroyed"));
}

#[test]
fn a_volume_keeps_its_data_across_a_restart_and_the_cli_drives_it() {
    let mut mds = Mds::start();
    let cli = |mds: &Mds, args: &[&str]| {
        let (ok, out, err) = mds.cli(args);
        assert!(ok, "{args:?}: {out}{err}");
        out
    };
    let out = cli(&mds, &["volumes", "create", "data", "--size-gb", "0.05"]);
    assert!(out.contains("data") && out.contains("available"), "{out}");
    cli(&mds, &["sandbox", "create", "--name", "s1"]);
    let out = cli(
        &mds,
        &["volumes", "attach", "data", "s1", "--mount-path", "/data"],
    );
    assert!(out.contains("fencing token"), "{out}");
    cli(
        &mds,
        &["sandbox", "exec", "s1", "--", "echo kept > /data/f"],
    );

    let root = mds.root.clone();
    mds.stop();
    let mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    // The lease and the data outlive the restart.
    let out = cli(&mds, &["sandbox", "exec", "s1", "--", "cat /data/f"]);
    assert_eq!(out, "kept\n");
    let out = cli(&mds, &["volumes", "snapshot", "data"]);
    assert!(out.starts_with("snapshot snap_"), "{out}");
    let (ok, _, err) = mds.cli(&["volumes", "delete", "data"]);
    assert!(!ok && err.contains("VOLUME_IN_USE"), "{err}");
    cli(&mds, &["volumes", "detach", "data"]);
    let out = cli(&mds, &["volumes", "list"]);
    assert!(out.contains("available"), "{out}");
    cli(&mds, &["volumes", "delete", "data"]);
    cli(&mds, &["sandbox", "destroy", "s1"]);
}
