//! Deployments through the CLI, and across a crash of mds: the instance
//! dies with it, and the restart serves the active version again.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::process::Command;
use std::time::Duration;

use common::{wait_until, Mds};

const APP: &str = r#"import os, http.server
V = open("VERSION").read().strip()
print("listening on", os.environ["PORT"], flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = V.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// The app's answer through the router, if it answers 200.
fn through_router(mds: &Mds, host: &str) -> Option<String> {
    let response = reqwest::blocking::Client::new()
        .get(&mds.url)
        .header("Host", host)
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?;
    (response.status() == 200).then(|| response.text().unwrap_or_default())
}

fn processes_matching(pattern: &str) -> String {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_cli_publishes_promotes_and_rolls_back_and_a_restart_serves_again() {
    let mut mds = Mds::start();
    let cli = |mds: &Mds, args: &[&str]| {
        let (ok, out, err) = mds.cli(args);
        assert!(ok, "{args:?}: {out}{err}");
        out
    };
    mds.post("/api/v1/projects", serde_json::json!({"name": "shop"}))
        .expect(201);
    cli(
        &mds,
        &[
            "sandbox",
            "create",
            "-p",
            "shop",
            "-e",
            "production",
            "--name",
            "dev",
        ],
    );
    // A file name no other test uses, to find its process by.
    let app = format!("app{}.py", std::process::id());
    cli(
        &mds,
        &[
            "sandbox",
            "exec",
            "dev",
            "--",
            &format!("cat > {app} <<'EOF'\n{APP}EOF\necho v1 > VERSION"),
        ],
    );
    let run = format!("python3 {app}");
    let out = cli(
        &mds,
        &[
            "deploy",
            "publish",
            "web",
            "--sandbox",
            "dev",
            "--run-command",
            &run,
        ],
    );
    assert!(
        out.contains("version 1 (dynamic")
            && out.contains("serving at http://web.production.localhost:"),
        "{out}"
    );
    assert_eq!(
        through_router(&mds, "web.production.localhost").as_deref(),
        Some("v1")
    );
    assert_eq!(through_router(&mds, "web.localhost").as_deref(), Some("v1"));

    cli(&mds, &["sandbox", "exec", "dev", "--", "echo v2 > VERSION"]);
    let out = cli(
        &mds,
        &[
            "deploy",
            "publish",
            "web",
            "--sandbox",
            "dev",
            "--no-promote",
        ],
    );
    assert!(
        out.contains("version 2") && !out.contains("serving at"),
        "{out}"
    );
    assert_eq!(through_router(&mds, "web.localhost").as_deref(), Some("v1"));
    let out = cli(&mds, &["deploy", "versions", "web"]);
    assert!(out.lines().count() == 3 && out.contains("ready"), "{out}");
    cli(&mds, &["deploy", "promote", "web", "2"]);
    assert_eq!(through_router(&mds, "web.localhost").as_deref(), Some("v2"));
    cli(&mds, &["deploy", "promote", "web", "1", "-e", "staging"]);
    assert_eq!(
        through_router(&mds, "web.staging.localhost").as_deref(),
        Some("v1")
    );
    let out = cli(&mds, &["deploy", "rollback", "web"]);
    assert!(
        out.contains("production") && out.contains("staging"),
        "{out}"
    );
    assert_eq!(through_router(&mds, "web.localhost").as_deref(), Some("v1"));
    // The instance switched out drains and stops in the background.
    let mut out = String::new();
    let settled = wait_until(Duration::from_secs(10), || {
        out = cli(&mds, &["deploy", "instances", "web"]);
        out.matches("healthy").count() == 2
    });
    assert!(settled.is_some(), "{out}");
    let out = cli(&mds, &["deploy", "logs", "web", "-e", "production"]);
    assert!(out.contains("listening on"), "{out}");
    let (ok, _, err) = mds.cli(&["deploy", "promote", "web", "9"]);
    assert!(!ok && err.contains("no version 9"), "{err}");

    // A volume follows production's instance (and must again after the
    // restart: the dead instance's lease ends with it).
    mds.post(
        "/api/v1/volumes",
        serde_json::json!({"name": "uploads", "size_gb": 0.05, "backend": "dir"}),
    )
    .expect(201);
    mds.post(
        "/api/v1/deployments/web/volumes",
        serde_json::json!({"volume_id": "uploads", "mount_path": "/data"}),
    )
    .expect(201);
    mds.post("/api/v1/deployments/web/redeploy", serde_json::json!({}))
        .expect(200);
    let volume = mds.get("/api/v1/volumes/uploads").expect(200);
    assert_eq!(volume.data()["attachment"]["holder_kind"], "instance");

    // kill -9: the instances die with mds (bubblewrap dies with its parent).
    let root = mds.root.clone();
    assert!(!processes_matching(&app).is_empty());
    mds.kill9();
    wait_until(Duration::from_secs(5), || {
        processes_matching(&app).is_empty()
    })
    .unwrap_or_else(|| panic!("left running: {}", processes_matching(&app)));

    // The restart serves each environment's active version again.
    let mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    wait_until(Duration::from_secs(30), || {
        through_router(&mds, "web.localhost").as_deref() == Some("v1")
            && through_router(&mds, "web.staging.localhost").as_deref() == Some("v1")
    })
    .unwrap_or_else(|| panic!("not serving again: {}", mds.log()));
    let volume = mds.get("/api/v1/volumes/uploads").expect(200);
    let holder = volume.data()["attachment"]["computer_id"].clone();
    let instances = mds
        .get("/api/v1/deployments/web/runtime-instances")
        .expect(200);
    assert!(
        instances
            .data()
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == holder && i["state"] == "healthy"),
        "{}",
        instances.body
    );
    let states: Vec<&str> = instances
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states.iter().filter(|s| **s == "healthy").count(),
        2,
        "{states:?}"
    );
    assert!(
        states.iter().all(|s| ["healthy", "destroyed"].contains(s)),
        "{states:?}"
    );
}
