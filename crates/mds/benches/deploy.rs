//! Deployment benchmark (issue 8): `cargo bench --bench deploy`.
//!
//! A small HTTP app (Python's http.server on $PORT) published twice from a
//! sandbox. Per round, while four clients send requests through the router
//! without pause:
//!
//! 1. promote the other version: the time from the call until the clients
//!    see the new version, and the requests that failed meanwhile;
//! 2. roll back: the same, back to the old version.
//!
//! Baselines in the same run: starting the same app directly on the host
//! until it answers (what any switch has to wait for), and the latency of
//! a request straight to the app against one through the router. Medians
//! and ranges over `BENCH_ROUNDS` (default 10). Target: 0 failed requests.
//! Prints Markdown for BENCHMARKS.md; never a gate.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Mds;
use serde_json::json;

const APP: &str = r#"import os, http.server
V = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "VERSION")).read().strip()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # one write per response: no Nagle delay against delayed ACKs
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

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

fn range(samples: &[Duration], unit: fn(Duration) -> String) -> String {
    let min = samples.iter().min().unwrap();
    let max = samples.iter().max().unwrap();
    format!("{}-{}", unit(*min), unit(*max))
}

/// (when, ok, body) of every request the clients sent.
type Seen = Arc<Mutex<Vec<(Instant, bool, String)>>>;

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Starts the app directly and waits until it answers.
fn raw_start(dir: &std::path::Path) -> Duration {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    // The interpreter the jail finds (PATH there is /usr/local/bin:/usr/bin:/bin),
    // not a shim of the host's PATH.
    let python = ["/usr/local/bin/python3", "/usr/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("python3");
    let mut child = Command::new(python)
        .arg(dir.join("app.py"))
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = client();
    let url = format!("http://127.0.0.1:{port}/");
    while http
        .get(&url)
        .send()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

/// Runs `op`; returns how long until the clients saw `want`, and the
/// failed and total requests from the call until then plus 200 ms.
fn switch(seen: &Seen, want: &str, op: impl FnOnce()) -> (Duration, usize, usize) {
    let began = Instant::now();
    op();
    let deadline = Instant::now() + Duration::from_secs(30);
    let serving = loop {
        let first = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(at, ok, body)| *at > began && *ok && body == want)
            .map(|(at, _, _)| *at);
        if let Some(at) = first {
            break at.duration_since(began);
        }
        assert!(Instant::now() < deadline, "never served {want}");
        std::thread::sleep(Duration::from_millis(2));
    };
    std::thread::sleep(Duration::from_millis(200));
    let seen = seen.lock().unwrap();
    let during: Vec<_> = seen.iter().filter(|(at, _, _)| *at > began).collect();
    let failed = during.iter().filter(|(_, ok, _)| !ok).count();
    (serving, failed, during.len())
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({ "name": "bench" }))
        .expect(201);
    let sandbox = mds
        .post(
            "/api/v1/sandboxes",
            json!({ "project_id": "bench", "environment": "production" }),
        )
        .expect(201);
    let sandbox = sandbox.data()["id"].as_str().unwrap().to_string();
    let exec = |command: &str| {
        mds.post(
            &format!("/api/v1/sandboxes/{sandbox}/exec"),
            json!({ "command": command }),
        )
        .expect(200);
    };
    exec(&format!("cat > app.py <<'EOF'\n{APP}EOF\necho a > VERSION"));
    let deployment = mds
        .post(
            "/api/v1/deployments",
            json!({ "name": "bench", "run_command": "python3 app.py",
                    "metadata": { "project_id": "bench" } }),
        )
        .expect(201);
    let deployment = deployment.data()["id"].as_str().unwrap().to_string();
    let publish = |promote: bool| {
        let answer = mds
            .post(
                &format!("/api/v1/deployments/{deployment}/publish"),
                json!({ "source_sandbox_id": sandbox, "promote": promote }),
            )
            .expect(201);
        answer.data()["version"]["id"].as_str().unwrap().to_string()
    };
    let a = publish(true);
    exec("echo b > VERSION");
    let b = publish(false);

    // Baselines: the app started directly; a request straight to it
    // against one through the router.
    let workspace = mds.root.join("data/sandboxes").join(&sandbox);
    let raw: Vec<Duration> = (0..rounds).map(|_| raw_start(&workspace)).collect();
    let instances = mds
        .get(&format!(
            "/api/v1/deployments/{deployment}/runtime-instances"
        ))
        .expect(200);
    let port = instances
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["state"] == "healthy")
        .unwrap()["port"]
        .as_u64()
        .unwrap();
    let http = client();
    let direct_url = format!("http://127.0.0.1:{port}/");
    let host = "bench.production.localhost";
    let (mut direct, mut routed) = (Vec::new(), Vec::new());
    for _ in 0..500 {
        let t = Instant::now();
        http.get(&direct_url).send().unwrap().text().unwrap();
        direct.push(t.elapsed());
        let t = Instant::now();
        http.get(&mds.url)
            .header("Host", host)
            .send()
            .unwrap()
            .text()
            .unwrap();
        routed.push(t.elapsed());
    }

    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (seen, stop, url) = (seen.clone(), stop.clone(), mds.url.clone());
            std::thread::spawn(move || {
                let http = client();
                while !stop.load(Ordering::Relaxed) {
                    let answer = http.get(&url).header("Host", host).send();
                    let (ok, body) = match answer {
                        Ok(r) if r.status() == 200 => (true, r.text().unwrap_or_default()),
                        _ => (false, String::new()),
                    };
                    seen.lock().unwrap().push((Instant::now(), ok, body));
                }
            })
        })
        .collect();
    let (mut promote, mut rollback) = (Vec::new(), Vec::new());
    let (mut failed, mut total) = (0, 0);
    for _ in 0..rounds {
        let (t, f, n) = switch(&seen, "b", || {
            mds.post(
                &format!("/api/v1/deployments/{deployment}/versions/{b}/promote"),
                json!({}),
            )
            .expect(200);
        });
        promote.push(t);
        failed += f;
        total += n;
        let (t, f, n) = switch(&seen, "a", || {
            mds.post(
                &format!("/api/v1/deployments/{deployment}/rollback"),
                json!({}),
            )
            .expect(200);
        });
        rollback.push(t);
        failed += f;
        total += n;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let _ = &a;

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("### Deployments (`scripts/bench deploy`), {rounds} rounds, {cpus} vCPUs\n");
    println!("| measure | median | range | ratio to raw start |");
    println!("|---|---|---|---|");
    let raw_median = median(&raw);
    println!(
        "| raw: start the app directly until it answers | {} | {} | 1.00 |",
        ms(raw_median),
        range(&raw, ms)
    );
    for (name, samples) in [
        ("promote until the new version serves", &promote),
        ("rollback until the old version serves", &rollback),
    ] {
        println!(
            "| {name} | {} | {} | {:.2} |",
            ms(median(samples)),
            range(samples, ms),
            median(samples).as_secs_f64() / raw_median.as_secs_f64()
        );
    }
    println!("\nFailed requests during the switches: **{failed} of {total}** (4 clients without pause).\n");
    println!("| request | median | range |");
    println!("|---|---|---|");
    println!(
        "| straight to the app | {} | {} |",
        us(median(&direct)),
        range(&direct, us)
    );
    println!(
        "| through the router (Host header) | {} | {} |",
        us(median(&routed)),
        range(&routed, us)
    );
}
