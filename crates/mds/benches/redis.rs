//! Managed Redis benchmark (issue 4): `cargo bench --bench redis`.
//!
//! 1. Attach Redis to a new project (both environments) until the first
//!    PONG with each environment's injected credentials; p50 over
//!    `BENCH_ROUNDS` (default 20).
//! 2. `redis-benchmark -t get,set` through a binding's credentials against a
//!    bare redis-server started with the same settings, in the same run.
//! 3. Idle memory (RSS) of a managed instance.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{block_on, Mds};
use futures_util::future::join_all;
use serde_json::json;

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// (user, password, port) of a redis:// URL.
fn parts(url: &str) -> (String, String, u16) {
    let rest = url.trim_start_matches("redis://");
    let (creds, hostport) = rest.split_once('@').unwrap();
    let (user, password) = creds.split_once(':').unwrap();
    let port = hostport
        .split(':')
        .nth(1)
        .unwrap()
        .trim_end_matches("/0")
        .parse()
        .unwrap();
    (user.to_string(), password.to_string(), port)
}

/// requests per second for SET and GET.
fn redis_benchmark(port: u16, user: &str, password: &str) -> (f64, f64) {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--user",
            user,
            "-a",
            password,
        ])
        .args(["-t", "set,get", "-n", "200000", "-c", "50", "-q"])
        .stderr(Stdio::null())
        .output()
        .expect("redis-benchmark (redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = |name: &str| -> f64 {
        text.lines()
            .flat_map(|l| l.split('\r'))
            .find(|l| l.starts_with(&format!("{name}:")) && l.contains("requests per second"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} rate in:\n{text}"))
    };
    (rate("SET"), rate("GET"))
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mds = Mds::start();

    let mut attach = Vec::new();
    for i in 0..rounds {
        let name = format!("r{i}");
        mds.post("/api/v1/projects", json!({ "name": name }))
            .expect(201);
        let started = Instant::now();
        mds.post(
            &format!("/api/v1/projects/{name}/data-services?wait=true"),
            json!({"type": "redis", "maxmemory": "64mb"}),
        )
        .expect(201);
        let urls: Vec<String> = ["production", "staging"]
            .iter()
            .map(|env| mds.resolved_env(&name, env)["REDIS_URL"].clone())
            .collect();
        block_on(async {
            join_all(urls.iter().map(|url| async move {
                let (user, password, port) = parts(url);
                mds_engines::resp::auth_ping("127.0.0.1", port, &user, &password)
                    .await
                    .expect("PONG");
            }))
            .await;
        });
        attach.push(started.elapsed());
    }

    // The bare baseline: same settings, same user setup, no mds involved.
    let url = mds.resolved_env("r0", "production")["REDIS_URL"].clone();
    let (user, password, port) = parts(&url);
    let tmp = tempfile::tempdir().unwrap();
    let bare_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut bare = Command::new("redis-server")
        .args([
            "--port",
            &bare_port.to_string(),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ])
        .args(["--maxmemory", "64mb", "--maxmemory-policy", "noeviction"])
        .args([
            "--user",
            "default",
            "off",
            "--user",
            &user,
            "on",
            &format!(">{password}"),
            "~*",
            "&*",
            "+@all",
            "-@admin",
        ])
        .arg("--dir")
        .arg(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    std::thread::sleep(Duration::from_millis(300));

    let mut managed = Vec::new();
    let mut baseline = Vec::new();
    for _ in 0..3 {
        managed.push(redis_benchmark(port, &user, &password));
        baseline.push(redis_benchmark(bare_port, &user, &password));
    }
    let _ = bare.kill();
    let _ = bare.wait();

    // Idle memory of one managed instance.
    let service = mds.get("/api/v1/projects/r1/data-services").data()[0].clone();
    let binding = service["bindings"][0]["id"].as_str().unwrap().to_string();
    let pid = std::fs::read_to_string(
        mds.data_dir
            .join(format!("engines/redis/{binding}/redis.pid")),
    )
    .unwrap()
    .trim()
    .to_string();
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<f64>()
        .unwrap();

    let median = |values: &mut Vec<f64>| {
        values.sort_by(|a, b| a.partial_cmp(b).unwrap());
        values[values.len() / 2]
    };
    let mut set_m: Vec<f64> = managed.iter().map(|r| r.0).collect();
    let mut get_m: Vec<f64> = managed.iter().map(|r| r.1).collect();
    let mut set_b: Vec<f64> = baseline.iter().map(|r| r.0).collect();
    let mut get_b: Vec<f64> = baseline.iter().map(|r| r.1).collect();
    let (sm, gm, sb, gb) = (
        median(&mut set_m),
        median(&mut get_m),
        median(&mut set_b),
        median(&mut get_b),
    );
    println!(
        "{rounds} attaches, release build; redis-benchmark -n 200000 -c 50, 3 rounds alternating"
    );
    println!();
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| attach (2 environments) to first PONG with each environment's credentials, p50 | {} |",
        ms(percentile(&attach, 0.5))
    );
    println!("| the same, p95 | {} |", ms(percentile(&attach, 0.95)));
    println!("| SET req/s through REDIS_URL (managed) / bare redis-server | {sm:.0} / {sb:.0} (ratio {:.2}) |", sm / sb);
    println!("| GET req/s through REDIS_URL (managed) / bare redis-server | {gm:.0} / {gb:.0} (ratio {:.2}) |", gm / gb);
    println!(
        "| idle RSS of one managed instance | {:.1} MiB |",
        rss / 1024.0
    );
}
