//! Postgres data-service benchmark (issue 3): `cargo bench --bench postgres`.
//!
//! 1. Attach Postgres to a new project (both environments provisioned
//!    concurrently) until a first query succeeds with each environment's
//!    injected credentials; against the raw cost, on the same server in the
//!    same run, of doing that by hand: CREATE ROLE + CREATE DATABASE for two
//!    environments concurrently, then a login and SELECT 1 with each role.
//! 2. `mds run -- true` against a plain spawn of `true`.
//!
//! Prints Markdown for BENCHMARKS.md. Never a pass/fail gate.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{block_on, Mds, BIN};
use futures_util::future::join_all;
use serde_json::json;
use tokio_postgres::NoTls;

fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn select_one(url: &str) {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    let task = tokio::spawn(conn);
    client.simple_query("SELECT 1").await.expect("SELECT 1");
    drop(client);
    let _ = task.await;
}

fn main() {
    let mds = Mds::start();
    let n = rounds();

    // 1a. Through mds: paced (a pause lets the spare databases refill, as
    // between real attaches), then back to back (the pool runs dry).
    let mut attach = Vec::new();
    let mut burst = Vec::new();
    for i in 0..2 * n {
        let paced = i < n;
        if paced {
            std::thread::sleep(Duration::from_millis(400));
        }
        let name = format!("bench-{i}");
        mds.post("/api/v1/projects", json!({ "name": name }))
            .expect(201);
        let started = Instant::now();
        mds.post(
            &format!("/api/v1/projects/{name}/data-services?wait=true"),
            json!({"type": "postgres"}),
        )
        .expect(201);
        let urls: Vec<String> = ["production", "staging"]
            .iter()
            .map(|env| {
                mds.resolved_env(&name, env)
                    .remove("DATABASE_URL")
                    .unwrap_or_else(|| {
                        let services = mds.get(&format!("/api/v1/projects/{name}/data-services"));
                        panic!("no DATABASE_URL in {env}: {}\n{}", services.body, mds.log())
                    })
            })
            .collect();
        block_on(async {
            join_all(urls.iter().map(|u| select_one(u))).await;
        });
        if paced {
            attach.push(started.elapsed());
        } else {
            burst.push(started.elapsed());
        }
    }

    // 1b. By hand, on the same server.
    let superuser = mds.superuser_config();
    let port = superuser.get_ports()[0];
    let mut raw = Vec::new();
    let mut raw_ddl = Vec::new();
    block_on(async {
        let mut admins = Vec::new();
        for _ in 0..2 {
            let (client, conn) = superuser.connect(NoTls).await.unwrap();
            tokio::spawn(conn);
            admins.push(client);
        }
        for i in 0..n {
            let started = Instant::now();
            let ddl = admins.iter().enumerate().map(|(e, admin)| async move {
                let name = format!("raw_{i}_{e}");
                admin
                    .batch_execute(&format!(
                        "CREATE ROLE {name} LOGIN PASSWORD 'raw-password-{i}-{e}'"
                    ))
                    .await
                    .unwrap();
                admin
                    .batch_execute(&format!("CREATE DATABASE {name} OWNER {name}"))
                    .await
                    .unwrap();
                name
            });
            let names = join_all(ddl).await;
            raw_ddl.push(started.elapsed());
            let urls: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(e, name)| {
                    format!("postgresql://{name}:raw-password-{i}-{e}@127.0.0.1:{port}/{name}")
                })
                .collect();
            join_all(urls.iter().map(|u| select_one(u))).await;
            raw.push(started.elapsed());
        }
    });

    // 2. mds run -- true against spawning true.
    let spawn = |cmd: &mut Command| {
        let started = Instant::now();
        let status = cmd.status().expect("spawn");
        assert!(status.success());
        started.elapsed()
    };
    let mut plain = Vec::new();
    let mut boot = Vec::new();
    for _ in 0..n {
        plain.push(spawn(&mut Command::new("true")));
        boot.push(spawn(
            Command::new(BIN)
                .args(["run", "-p", "bench-0", "-e", "staging", "--", "true"])
                .env("MIOSA_BASE_URL", &mds.url)
                .env("MIOSA_API_KEY", &mds.admin_key),
        ));
    }

    let p50 = |s: &[Duration]| percentile(s, 0.5);
    let p95 = |s: &[Duration]| percentile(s, 0.95);
    println!("{n} rounds, release build, managed PostgreSQL on this machine");
    println!();
    println!("| measurement | p50 | p95 |");
    println!("|---|---|---|");
    println!("| attach (2 environments) to a first query with each environment's injected credentials, 400 ms apart | {} | {} |", ms(p50(&attach)), ms(p95(&attach)));
    println!(
        "| the same, back to back (spares run out) | {} | {} |",
        ms(p50(&burst)),
        ms(p95(&burst))
    );
    println!("| raw: CREATE ROLE + CREATE DATABASE x2 concurrently, then log in and SELECT 1 with each | {} | {} |", ms(p50(&raw)), ms(p95(&raw)));
    println!(
        "| raw DDL alone (CREATE ROLE + CREATE DATABASE x2 concurrently) | {} | {} |",
        ms(p50(&raw_ddl)),
        ms(p95(&raw_ddl))
    );
    println!(
        "| ratio attach / raw (p50), paced | {:.2} | |",
        p50(&attach).as_secs_f64() / p50(&raw).as_secs_f64()
    );
    println!(
        "| ratio attach / raw (p50), back to back | {:.2} | |",
        p50(&burst).as_secs_f64() / p50(&raw).as_secs_f64()
    );
    println!(
        "| `true` spawned directly | {} | {} |",
        ms(p50(&plain)),
        ms(p95(&plain))
    );
    println!(
        "| `mds run -p P -e staging -- true` | {} | {} |",
        ms(p50(&boot)),
        ms(p95(&boot))
    );
    println!(
        "| resolve + inject overhead (p50 difference) | {} | |",
        ms(p50(&boot).saturating_sub(p50(&plain)))
    );
}
