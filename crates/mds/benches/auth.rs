//! End-user auth benchmark (issue 6): `cargo bench --bench auth`.
//!
//! One run, against the real release binary, on one project with auth
//! enabled (rate limits raised to 1,000,000 a minute so they never bite):
//!
//! 1. Hash cost: `mds_auth::password::hash_with` (argon2id, the server's
//!    parameters, in memory reused from hash to hash as the server's
//!    hashing threads do) on this process's thread, `BENCH_HASHES`
//!    (default 8) per round, half before and half after the logins at
//!    saturation; the hash-bound login ceiling is cores / median hash
//!    time. Also the rate of `cores` threads hashing at once in this
//!    process for 3 s, what the machine gives when every core hashes.
//! 2. Login (`POST /token?grant_type=password`): p50 latency unloaded
//!    (`BENCH_LOGINS`, default 20, one after another), then throughput at
//!    saturation with `BENCH_CLIENTS` (default 16) concurrent clients, each
//!    its own pre-created user, `BENCH_WARMUP_SECS` (2) then `BENCH_SECS`
//!    (10) measured. Target: at least 0.9 of the ceiling.
//! 3. `GET /user` with a valid access token against `GET /healthz` (no
//!    auth, no database) with wrk `-t2 -c64 -d{BENCH_SECS}s` on the same
//!    machine. Target: at least 10k req/s.
//!
//! `BENCH_ROUNDS` (default 5) rounds, each all of the above in turn.
//! Next to each load: the cores used by mds, its PostgreSQL (the server's
//! descendants), the load generator (this process, or wrk) and the whole
//! machine (busy, and steal), from /proc (utime + stime).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Mds;
use mds_auth::password::{hash_with, Memory};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `median (min-max)` with `fmt` applied to each.
fn spread(v: &[f64], fmt: impl Fn(f64) -> String) -> String {
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("{} ({}-{})", fmt(median(v.to_vec())), fmt(min), fmt(max))
}

/// 12345.6 -> "12,346"
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------- CPU

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The fields after "(comm)" of /proc/<pid>/stat.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// (ppid, utime + stime in ticks) of every process.
fn processes() -> HashMap<u32, (u32, u64)> {
    let mut all = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some(f) = stat_fields(pid) {
            // state ppid ... utime(11) stime(12)
            let num = |i: usize| f.get(i).copied().unwrap_or(0);
            all.insert(pid, (num(1) as u32, num(11) + num(12)));
        }
    }
    all
}

/// CPU seconds so far: the server, its descendants (PostgreSQL), this
/// process, this process's waited-for children (wrk), the whole machine
/// (busy, not idle or iowait) and what the hypervisor took (steal).
#[derive(Clone, Copy)]
struct Snap {
    at: Instant,
    server: f64,
    postgres: f64,
    client: f64,
    waited: f64,
    machine: f64,
    steal: f64,
}

/// (busy, steal) ticks of all CPUs, from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let num = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    (num(0) + num(1) + num(2) + num(5) + num(6), num(7))
}

fn snap(server_pid: u32, tck: f64) -> Snap {
    let all = processes();
    let server = all.get(&server_pid).map_or(0, |p| p.1);
    let mut postgres = 0;
    let mut frontier = vec![server_pid];
    while let Some(parent) = frontier.pop() {
        for (pid, (ppid, ticks)) in &all {
            if *ppid == parent {
                postgres += ticks;
                frontier.push(*pid);
            }
        }
    }
    let own = stat_fields(std::process::id()).unwrap_or_default();
    let num = |i: usize| own.get(i).copied().unwrap_or(0);
    let (machine, steal) = machine_ticks();
    Snap {
        at: Instant::now(),
        server: server as f64 / tck,
        postgres: postgres as f64 / tck,
        client: (num(11) + num(12)) as f64 / tck,
        waited: (num(13) + num(14)) as f64 / tck,
        machine: machine as f64 / tck,
        steal: steal as f64 / tck,
    }
}

/// Cores used between two snaps.
#[derive(Clone, Copy, Default)]
struct Cores {
    mds: f64,
    postgres: f64,
    load: f64,
    machine: f64,
    steal: f64,
}

impl Cores {
    fn between(a: Snap, b: Snap, load_is_wrk: bool) -> Self {
        let wall = (b.at - a.at).as_secs_f64();
        let load = if load_is_wrk {
            b.waited - a.waited
        } else {
            b.client - a.client
        };
        Self {
            mds: (b.server - a.server) / wall,
            postgres: (b.postgres - a.postgres) / wall,
            load: load / wall,
            machine: (b.machine - a.machine) / wall,
            steal: (b.steal - a.steal) / wall,
        }
    }
}

// ---------------------------------------------------------------- hashing

/// Seconds each of `n` hashes took, one after another on this thread.
fn hash_times(n: usize) -> Vec<f64> {
    let mut memory = Memory::new();
    (0..n)
        .map(|_| {
            let began = Instant::now();
            std::hint::black_box(hash_with(&mut memory, PASSWORD));
            began.elapsed().as_secs_f64()
        })
        .collect()
}

/// `threads` threads hashing at once for `secs`: (hashes per second, this
/// process's CPU seconds per hash meanwhile).
fn parallel_hashing(threads: usize, secs: f64, tck: f64) -> (f64, f64) {
    let own_cpu = || {
        let f = stat_fields(std::process::id()).unwrap_or_default();
        (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / tck
    };
    let (cpu, began) = (own_cpu(), Instant::now());
    let count: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let (mut n, mut memory) = (0, Memory::new());
                    while began.elapsed().as_secs_f64() < secs {
                        std::hint::black_box(hash_with(&mut memory, PASSWORD));
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let (wall, cpu) = (began.elapsed().as_secs_f64(), own_cpu() - cpu);
    (count as f64 / wall, cpu / count as f64)
}

// ---------------------------------------------------------------- logins

/// One password login; its latency, or why it failed.
async fn login(client: &reqwest::Client, auth_url: &str, email: &str) -> Result<Duration, String> {
    let began = Instant::now();
    let response = client
        .post(format!("{auth_url}/token?grant_type=password"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(began.elapsed())
}

fn email(i: usize) -> String {
    format!("bench-{i}@example.com")
}

struct Saturated {
    rate: f64,
    p50_ms: f64,
    errors: u64,
    first_error: Option<String>,
    cores: Cores,
}

/// `clients` concurrent login loops (client i logs in as user i):
/// `warmup`, then `measured`, counting logins that end in that window.
fn saturate(
    rt: &tokio::runtime::Runtime,
    auth_url: &str,
    clients: usize,
    warmup: Duration,
    measured: Duration,
    server_pid: u32,
    tck: f64,
) -> Saturated {
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let stop = stop.clone();
                let url = auth_url.to_string();
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(60))
                        .build()
                        .unwrap();
                    let who = email(c);
                    let mut done: Vec<(Instant, Duration)> = Vec::new();
                    let mut errors: Vec<(Instant, String)> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match login(&client, &url, &who).await {
                            Ok(latency) => done.push((Instant::now(), latency)),
                            Err(e) => errors.push((Instant::now(), e)),
                        }
                    }
                    (done, errors)
                })
            })
            .collect();
        tokio::time::sleep(warmup).await;
        let a = snap(server_pid, tck);
        tokio::time::sleep(measured).await;
        let b = snap(server_pid, tck);
        stop.store(true, Ordering::Relaxed);
        let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
        for task in tasks {
            let (done, failed) = task.await.unwrap();
            let within = |at: &Instant| *at >= a.at && *at <= b.at;
            latencies.extend(
                done.iter()
                    .filter(|(at, _)| within(at))
                    .map(|(_, l)| l.as_secs_f64() * 1e3),
            );
            for (at, e) in failed {
                if within(&at) {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        let wall = (b.at - a.at).as_secs_f64();
        Saturated {
            rate: latencies.len() as f64 / wall,
            p50_ms: median(latencies),
            errors,
            first_error,
            cores: Cores::between(a, b, false),
        }
    })
}

// ---------------------------------------------------------------- wrk

struct Wrk {
    rate: f64,
    p50_ms: f64,
    cores: Cores,
}

fn wrk(url: &str, bearer: Option<&str>, connections: usize, secs: u64, pid: u32, tck: f64) -> Wrk {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", &format!("-c{connections}"), &format!("-d{secs}s")])
        .arg("--latency");
    if let Some(token) = bearer {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    cmd.arg(url);
    let a = snap(pid, tck);
    let out = cmd
        .output()
        .expect("wrk is installed (apt-get install wrk; scripts/bench installs it)");
    let b = snap(pid, tck);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed:\n{text}");
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk saw errors on {url}:\n{text}"
    );
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in:\n{text}"));
    let p50_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .map(|v| {
            let v = v.trim();
            let (num, factor) = if let Some(n) = v.strip_suffix("us") {
                (n, 1e-3)
            } else if let Some(n) = v.strip_suffix("ms") {
                (n, 1.0)
            } else if let Some(n) = v.strip_suffix('s') {
                (n, 1e3)
            } else {
                (v, f64::NAN)
            };
            num.parse::<f64>().map_or(f64::NAN, |n| n * factor)
        })
        .unwrap_or(f64::NAN);
    Wrk {
        rate,
        p50_ms,
        cores: Cores::between(a, b, true),
    }
}

// ---------------------------------------------------------------- main

fn main() {
    let rounds: usize = env_or("BENCH_ROUNDS", 5);
    let hashes: usize = env_or("BENCH_HASHES", 8);
    let sequential: usize = env_or("BENCH_LOGINS", 20);
    let clients: usize = env_or("BENCH_CLIENTS", 16);
    let connections: usize = env_or("BENCH_CONNECTIONS", 64);
    let warmup = Duration::from_secs(env_or("BENCH_WARMUP_SECS", 2));
    let secs: u64 = env_or("BENCH_SECS", 10);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Warm-up: the heap grows to hold a hash's memory once.
    hash_times(3);
    let tck = clk_tck();

    let mds = Mds::start();
    let pid = mds.pid();
    let project = mds
        .post("/api/v1/projects", json!({ "name": "authbench" }))
        .expect(201);
    let project_id = project.data()["id"].as_str().unwrap().to_string();
    let enabled = mds
        .post(
            &format!("/api/v1/projects/{project_id}/auth"),
            json!({ "login_rate_per_ip": 1_000_000, "login_rate_per_account": 1_000_000 }),
        )
        .expect(200);
    let auth_url = enabled.data()["auth_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no auth_url: {}", enabled.body))
        .to_string();
    let healthz = format!("{}/healthz", mds.url);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // One user per concurrent client; the first one's token for GET /user.
    let http = mds.raw();
    for i in 0..clients {
        let answer = common::answer(
            http.post(format!("{auth_url}/signup"))
                .json(&json!({ "email": email(i), "password": PASSWORD }))
                .send()
                .expect("signup"),
        )
        .expect(200);
        assert!(answer.body["access_token"].is_string(), "{}", answer.body);
    }
    let session: Value = http
        .post(format!("{auth_url}/token?grant_type=password"))
        .json(&json!({ "email": email(0), "password": PASSWORD }))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("login");
    let token = session["access_token"].as_str().unwrap().to_string();
    let user_url = format!("{auth_url}/user");
    let me = common::answer(http.get(&user_url).bearer_auth(&token).send().unwrap()).expect(200);
    assert_eq!(me.body["email"], email(0), "{}", me.body);
    eprintln!(
        "auth bench: {rounds} rounds, {cores} cores, {clients} login clients, \
         wrk -t2 -c{connections} -d{secs}s; {auth_url}"
    );

    let mut hash_ms = Vec::new();
    let mut parallel_rate = Vec::new();
    let mut parallel_cpu_ms = Vec::new();
    let mut practical_ratio = Vec::new();
    let mut mds_cpu_ms = Vec::new();
    let mut ceiling = Vec::new();
    let mut all_times = Vec::new();
    let mut seq_p50 = Vec::new();
    let mut sat_rate = Vec::new();
    let mut sat_p50 = Vec::new();
    let mut sat_ratio = Vec::new();
    let mut sat_errors = 0;
    let mut first_error = None;
    let mut health_rate = Vec::new();
    let mut health_p50 = Vec::new();
    let mut user_rate = Vec::new();
    let mut user_p50 = Vec::new();
    let mut user_ratio = Vec::new();
    let (mut login_cores, mut health_cores, mut user_cores) = (vec![], vec![], vec![]);

    for round in 0..rounds {
        // Hash cost with the server idle, half before the logins at
        // saturation and half after, so a noisy moment skews it less.
        let faults = || stat_fields(std::process::id()).unwrap_or_default()[7];
        let before = faults();
        let mut times = hash_times(hashes.div_ceil(2));
        let hash_faults = (faults() - before) / hashes.div_ceil(2) as u64;
        let (rate, cpu) = parallel_hashing(cores, 3.0, tck);
        parallel_rate.push(rate);
        parallel_cpu_ms.push(cpu * 1e3);

        // Unloaded login latency: one after another.
        let latencies: Vec<f64> = rt.block_on(async {
            let client = reqwest::Client::new();
            let mut out = Vec::new();
            for i in 0..sequential {
                let took = login(&client, &auth_url, &email(i % clients))
                    .await
                    .unwrap_or_else(|e| panic!("login: {e}"));
                out.push(took.as_secs_f64() * 1e3);
            }
            out
        });
        seq_p50.push(median(latencies));

        // Login at saturation.
        let s = saturate(
            &rt,
            &auth_url,
            clients,
            warmup,
            Duration::from_secs(secs),
            pid,
            tck,
        );
        times.extend(hash_times(hashes / 2));
        all_times.extend(&times);
        let cost = median(times);
        hash_ms.push(cost * 1e3);
        ceiling.push(cores as f64 / cost);
        sat_rate.push(s.rate);
        sat_p50.push(s.p50_ms);
        sat_ratio.push(s.rate / (cores as f64 / cost));
        practical_ratio.push(s.rate / rate);
        mds_cpu_ms.push(s.cores.mds / s.rate * 1e3);
        sat_errors += s.errors;
        if first_error.is_none() {
            first_error = s.first_error;
        }
        login_cores.push(s.cores);

        // GET /healthz, then GET /user.
        let h = wrk(&healthz, None, connections, secs, pid, tck);
        let u = wrk(&user_url, Some(&token), connections, secs, pid, tck);
        health_rate.push(h.rate);
        health_p50.push(h.p50_ms);
        user_rate.push(u.rate);
        user_p50.push(u.p50_ms);
        user_ratio.push(u.rate / h.rate);
        health_cores.push(h.cores);
        user_cores.push(u.cores);
        eprintln!(
            "  round {}: hash {:.1} ms ({hash_faults} page faults each), login {:.1} ms unloaded, {:.1}/s saturated \
             ({:.2} of ceiling {:.1}/s; {cores} threads hash {rate:.1}/s), \
             healthz {:.0}/s, user {:.0}/s",
            round + 1,
            cost * 1e3,
            seq_p50[round],
            s.rate,
            sat_ratio[round],
            ceiling[round],
            h.rate,
            u.rate
        );
    }

    let ms = |x: f64| format!("{x:.1} ms");
    let per_s = |x: f64| format!("{x:.1}/s");
    let ratio = |x: f64| format!("{x:.2}");
    println!(
        "{rounds} rounds, release build, {cores} cores; {hashes} hashes per round; \
         {clients} login clients ({warmup:?} warm-up, {secs} s measured); \
         wrk -t2 -c{connections} -d{secs}s"
    );
    println!();
    println!("| measurement | median (min-max) |");
    println!("|---|---|");
    println!(
        "| argon2id hash (m=19456 KiB, t=2, p=1), one thread | {} |",
        spread(&hash_ms, ms)
    );
    println!(
        "| hash-bound login ceiling ({cores} cores / hash time) | {} |",
        spread(&ceiling, per_s)
    );
    println!(
        "| hashes/s with {cores} threads hashing at once (this process, 3 s) | {} |",
        spread(&parallel_rate, per_s)
    );
    println!(
        "| CPU per hash with {cores} threads at once | {} |",
        spread(&parallel_cpu_ms, ms)
    );
    println!(
        "| login p50, unloaded (one after another) | {} |",
        spread(&seq_p50, ms)
    );
    println!(
        "| logins/s at saturation ({clients} clients) | {} |",
        spread(&sat_rate, per_s)
    );
    println!("| login p50 at saturation | {} |", spread(&sat_p50, ms));
    println!(
        "| ratio logins/s / ceiling | {} |",
        spread(&sat_ratio, ratio)
    );
    println!(
        "| ratio logins/s / hashes/s with {cores} threads | {} |",
        spread(&practical_ratio, ratio)
    );
    println!(
        "| mds CPU per login at saturation | {} |",
        spread(&mds_cpu_ms, ms)
    );
    println!(
        "| GET /healthz (baseline), req/s | {} |",
        spread(&health_rate, thousands)
    );
    println!(
        "| GET /user (valid token), req/s | {} |",
        spread(&user_rate, thousands)
    );
    println!(
        "| GET /user p50 latency (wrk) | {} |",
        spread(&user_p50, |x| format!("{x:.2} ms"))
    );
    println!(
        "| GET /healthz p50 latency (wrk) | {} |",
        spread(&health_p50, |x| format!("{x:.2} ms"))
    );
    println!(
        "| ratio /user / /healthz | {} |",
        spread(&user_ratio, ratio)
    );
    let pooled = cores as f64 / median(all_times.clone());
    println!();
    println!(
        "Over the run: median logins/s {:.1} / ceiling from the median of all {} hashes \
         {:.1}/s = {:.2}.",
        median(sat_rate.clone()),
        all_times.len(),
        pooled,
        median(sat_rate.clone()) / pooled
    );
    println!();
    println!("Cores used during each load (median over rounds):");
    println!();
    println!("| load | mds | PostgreSQL | load generator | whole machine busy | steal |");
    println!("|---|---|---|---|---|---|");
    for (name, samples, generator) in [
        ("logins at saturation", &login_cores, "bench client"),
        ("GET /healthz", &health_cores, "wrk"),
        ("GET /user", &user_cores, "wrk"),
    ] {
        let m = |f: fn(&Cores) -> f64| median(samples.iter().map(f).collect());
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} ({generator}) | {:.2} | {:.2} |",
            m(|c| c.mds),
            m(|c| c.postgres),
            m(|c| c.load),
            m(|c| c.machine),
            m(|c| c.steal)
        );
    }
    if sat_errors > 0 {
        println!();
        println!(
            "{sat_errors} failed logins at saturation; the first: {}",
            first_error.unwrap_or_default()
        );
    }
}
