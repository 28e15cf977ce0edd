//! Sandbox benchmark (issue 7): `cargo bench --bench sandbox`.
//!
//! Per round, against the real release binary with a project whose
//! Postgres is attached:
//!
//! 1. create a sandbox (`POST /sandboxes`, staging) and exec
//!    `echo $DATABASE_URL` in it, until the answer is back; against a plain
//!    spawn of `sh -c 'echo $DATABASE_URL'` with the same variable;
//! 2. create a sandbox and exec `psql "$DATABASE_URL" -Atc 'select 1'`;
//!    against running that psql directly: psql's own time.
//!
//! Sandboxes are destroyed between rounds (not timed). p50 and p95 over
//! `BENCH_ROUNDS` (default 30). Target: at most 50 ms at p50 on top of
//! psql's own time. Prints Markdown for BENCHMARKS.md; never a gate.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Mds;
use serde_json::json;

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Creates a sandbox, runs `command` in it; returns (elapsed, stdout, id).
fn create_and_exec(mds: &Mds, project: &str, command: &str) -> (Duration, String, String) {
    let started = Instant::now();
    let created = mds
        .post("/api/v1/sandboxes", json!({ "project_id": project }))
        .expect(201);
    let id = created.data()["id"].as_str().unwrap().to_string();
    let ran = mds
        .post(
            &format!("/api/v1/sandboxes/{id}/exec"),
            json!({ "command": command }),
        )
        .expect(200);
    let elapsed = started.elapsed();
    let stdout = ran.data()["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (elapsed, stdout, id)
}

fn plain(command: &str, database_url: &str) -> (Duration, String) {
    let started = Instant::now();
    let out = Command::new("sh")
        .args(["-c", command])
        .env("DATABASE_URL", database_url)
        .output()
        .expect("sh runs");
    (
        started.elapsed(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({ "name": "bench" }))
        .expect(201);
    let project = mds.get("/api/v1/projects/bench").expect(200).data()["id"]
        .as_str()
        .unwrap()
        .to_string();
    mds.post(
        "/api/v1/projects/bench/data-services?wait=true",
        json!({ "type": "postgres" }),
    )
    .expect(201);
    let url = mds.resolved_env("bench", "staging")["DATABASE_URL"].clone();
    let echo = "echo \"$DATABASE_URL\"";
    let psql = "psql \"$DATABASE_URL\" -Atc 'select 1'";

    let (mut spawn, mut sandbox_echo, mut direct_psql, mut sandbox_psql) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds + 2 {
        let (a, out) = plain(echo, &url);
        assert_eq!(out.trim(), url);
        let (b, out, id1) = create_and_exec(&mds, &project, echo);
        assert_eq!(out.trim(), url);
        let (c, out) = plain(psql, &url);
        assert_eq!(out.trim(), "1");
        let (d, out, id2) = create_and_exec(&mds, &project, psql);
        assert_eq!(out.trim(), "1");
        for id in [id1, id2] {
            mds.delete(&format!("/api/v1/sandboxes/{id}")).expect(200);
        }
        // The first two rounds warm caches and connections.
        if round >= 2 {
            spawn.push(a);
            sandbox_echo.push(b);
            direct_psql.push(c);
            sandbox_psql.push(d);
        }
    }

    let row = |name: &str, v: &[Duration]| {
        println!(
            "| {name} | {} | {} |",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.95))
        );
    };
    println!("{rounds} rounds, release build\n");
    println!("| measurement | p50 | p95 |");
    println!("|---|---|---|");
    row("plain spawn of sh -c 'echo $DATABASE_URL'", &spawn);
    row("create a sandbox + exec echo $DATABASE_URL", &sandbox_echo);
    row("psql select 1, run directly", &direct_psql);
    row("create a sandbox + exec psql select 1", &sandbox_psql);
    let over =
        |a: &[Duration], b: &[Duration]| percentile(a, 0.5).saturating_sub(percentile(b, 0.5));
    println!(
        "\nOn top, at p50: echo {} over a plain spawn; psql {} over psql's own time (target at most 50 ms).",
        ms(over(&sandbox_echo, &spawn)),
        ms(over(&sandbox_psql, &direct_psql))
    );
}
