//! The CLI against a real server: tables, --json, exit codes, discovery.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::process::{Command, Stdio};

use common::{Mds, BIN};
use serde_json::Value;

#[test]
fn projects_envs_and_vars_from_the_cli() {
    let mds = Mds::start();
    let (ok, out, err) = mds.cli(&["projects", "create", "My Shop", "--description", "demo"]);
    assert!(ok, "{err}");
    assert!(out.contains("Created project my-shop"), "{out}");
    assert!(
        out.contains("production") && out.contains("staging"),
        "{out}"
    );

    let (ok, out, _) = mds.cli(&["projects", "list"]);
    assert!(ok);
    assert!(out.starts_with("SLUG"), "{out}");
    assert!(out.contains("my-shop"), "{out}");

    let (ok, out, _) = mds.cli(&["projects", "show", "my-shop", "--json"]);
    assert!(ok);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["data"]["slug"], "my-shop");

    let (ok, out, err) = mds.cli(&["envs", "create", "preview/pr-7", "-p", "my-shop"]);
    assert!(ok, "{err}");
    assert!(out.contains("preview/pr-7"), "{out}");
    let (ok, out, _) = mds.cli(&["envs", "list", "-p", "my-shop"]);
    assert!(ok && out.contains("preview-pr-7"), "{out}");

    let (ok, _, err) = mds.cli(&[
        "vars",
        "set",
        "-p",
        "my-shop",
        "-e",
        "preview/pr-7",
        "API_BASE=https://pr7.example.com",
        "DB_PASSWORD=hunter22",
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = mds.cli(&["vars", "list", "-p", "my-shop", "-e", "preview/pr-7"]);
    assert!(ok);
    assert!(out.contains("API_BASE") && out.contains("http…"), "{out}");
    assert!(!out.contains("hunter22"), "a secret was printed: {out}");
    let (ok, out, _) = mds.cli(&[
        "vars",
        "list",
        "-p",
        "my-shop",
        "-e",
        "preview/pr-7",
        "--reveal",
    ]);
    assert!(ok && out.contains("hunter22"), "{out}");
    let (ok, _, _) = mds.cli(&[
        "vars",
        "unset",
        "-p",
        "my-shop",
        "-e",
        "preview/pr-7",
        "DB_PASSWORD",
    ]);
    assert!(ok);
    let (_, out, _) = mds.cli(&[
        "vars",
        "list",
        "-p",
        "my-shop",
        "-e",
        "preview/pr-7",
        "--json",
    ]);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);

    let (ok, _, _) = mds.cli(&["envs", "delete", "preview/pr-7", "-p", "my-shop"]);
    assert!(ok);

    // Errors: non-zero, and a message that says what happened.
    let (ok, _, err) = mds.cli(&["projects", "show", "nope"]);
    assert!(!ok);
    assert!(err.contains("not found") && err.contains("404"), "{err}");
    let (ok, _, err) = mds.cli(&["vars", "set", "-p", "my-shop", "NOEQUALS"]);
    assert!(!ok && err.contains("NAME=value"), "{err}");
    let (ok, _, err) = mds.cli(&["envs", "delete", "production", "-p", "my-shop"]);
    assert!(!ok && err.contains("ENVIRONMENT_IS_DEFAULT"), "{err}");

    // Deleting wants confirmation.
    let (ok, _, err) = mds.cli(&["projects", "delete", "my-shop"]);
    assert!(!ok && err.contains("--yes"), "{err}");
    let (ok, _, _) = mds.cli(&["projects", "delete", "my-shop", "--yes"]);
    assert!(ok);
    mds.get("/api/v1/projects/my-shop")
        .expect_error(404, "NOT_FOUND");
}

#[test]
fn the_cli_finds_the_server_and_key_in_the_data_dir_and_reports_bad_keys() {
    let mds = Mds::start();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("MIOSA_BASE_URL")
            .env_remove("MIOSA_API_KEY")
            .env_remove("MIOSA_ACCESS_TOKEN")
            .env_remove("MDS_ADMIN_API_KEY")
            .env_remove("MDS_DATA_DIR")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dir = mds.data_dir.to_str().unwrap();
    let (ok, out, err) = run(&["--data-dir", dir, "projects", "create", "found-it"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("found-it"));

    let (ok, _, err) = run(
        &["projects", "list"],
        &[("MIOSA_BASE_URL", &mds.url), ("MIOSA_API_KEY", "msk_nope")],
    );
    assert!(!ok);
    assert!(
        err.contains("invalid_token") && err.contains("hint"),
        "{err}"
    );

    let (ok, _, err) = run(
        &[
            "projects",
            "list",
            "--server",
            "http://127.0.0.1:1",
            "--api-key",
            "msk_x",
        ],
        &[],
    );
    assert!(!ok && err.contains("cannot reach mds"), "{err}");
}
