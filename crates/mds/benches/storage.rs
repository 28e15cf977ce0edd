//! Storage (S3 endpoint) benchmark: `cargo bench --bench storage`, or
//! `scripts/bench storage` (which also installs the peers).
//!
//! One run measures, against the real release binary:
//!
//! 1. Ceilings: `dd` 1 GiB write (`conv=fsync`) into the data dir's
//!    filesystem, `dd` read of it (page cache, nothing dropped), MD5 over
//!    1 GiB on one core (md-5). The per-stream PUT ceiling is
//!    min(dd write, MD5).
//! 2. Large: one 1 GiB PUT (streamed from memory, 1 MiB frames) and one
//!    GET of it, on one connection, `BENCH_REPS` times (default 3). Every
//!    rep uploads new content, so content addressing cannot skip writes.
//! 3. Small: 4 KiB PUT, then GET, with `BENCH_CLIENTS` (32) keep-alive
//!    connections, `BENCH_WARMUP_SECS` (2) then `BENCH_SECS` (10) measured,
//!    `BENCH_REPS` times.
//! 4. Dedup: the same 100 MiB object PUT under two keys; bytes under
//!    `storage/blobs` before and after each.
//!
//! Next to every figure: the server's CPU per operation from
//! /proc/<pid>/stat (utime+stime), the server process itself and its
//! descendants (mds: its PostgreSQL) apart, and this client's CPU.
//!
//! Peers, same driver, same run, optional: s3s-fs 0.14.1 (`S3S_FS_BIN`,
//! default /tmp/s3s-fs/bin/s3s-fs) and moto (`MOTO_SERVER_BIN`, default
//! /tmp/moto-venv/bin/moto_server). `BENCH_PEERS=none` skips them. Reps
//! alternate between servers, all started once.
//!
//! Requests are signed with SigV4 (headers, `UNSIGNED-PAYLOAD`) here, over
//! bare hyper HTTP/1.1 connections.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use md5::Md5;
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;
const SMALL: usize = 4096;
const BUCKET: &str = "bench";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- SigV4

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// (`20261125T101500Z`, `20261125`) for now, UTC.
fn amz_date() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let day = format!("{y:04}{m:02}{d:02}");
    let time = format!("{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60);
    (format!("{day}T{time}Z"), day)
}

#[derive(Clone)]
struct Creds {
    host: String,
    access_key: String,
    secret_key: String,
}

/// A path-style request signed in its headers; `path` needs no escaping
/// (bench keys are `[a-z0-9/-]`).
fn signed(c: &Creds, method: Method, path: &str, body: Bytes) -> Request<Slices> {
    let (date, day) = amz_date();
    let canonical = format!(
        "{method}\n{path}\n\nhost:{}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{date}\n\n\
         host;x-amz-content-sha256;x-amz-date\nUNSIGNED-PAYLOAD",
        c.host
    );
    let scope = format!("{day}/us-east-1/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{}", c.secret_key).as_bytes(), day.as_bytes());
    for part in ["us-east-1", "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(path)
        .header("host", &c.host)
        .header("x-amz-date", date)
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, \
                 SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}",
                c.access_key
            ),
        );
    if method == Method::PUT {
        builder = builder.header("content-length", body.len());
    }
    builder.body(Slices(body)).unwrap()
}

// ---------------------------------------------------------------- HTTP

/// A request body handed to hyper in 1 MiB frames, without copying.
struct Slices(Bytes);

impl hyper::body::Body for Slices {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.0.len().min(MIB);
        Poll::Ready(Some(Ok(Frame::data(self.0.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.len() as u64)
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One keep-alive HTTP/1.1 connection, reopened when the server closes it.
struct Conn {
    creds: Creds,
    tx: Option<SendRequest<Slices>>,
}

impl Conn {
    fn new(creds: &Creds) -> Self {
        Self {
            creds: creds.clone(),
            tx: None,
        }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, Error> {
        if self.tx.as_ref().is_none_or(|tx| tx.is_closed()) {
            let stream = tokio::net::TcpStream::connect(&self.creds.host).await?;
            stream.set_nodelay(true)?;
            let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            self.tx = Some(tx);
        }
        let request = signed(&self.creds, method, path, body);
        let tx = self.tx.as_mut().unwrap();
        let sent = async {
            tx.ready().await?;
            tx.send_request(request).await
        }
        .await;
        match sent {
            Ok(response) => {
                if response
                    .headers()
                    .get("connection")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
                {
                    self.tx = None;
                }
                Ok(response)
            }
            Err(e) => {
                self.tx = None;
                Err(e.into())
            }
        }
    }

    /// Status, ETag and the body's length (the body is read and dropped).
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(u16, String, u64), Error> {
        let response = self.send(method, path, body).await?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim_matches('"')
            .to_string();
        let mut body = response.into_body();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                len += data.len() as u64;
            }
        }
        Ok((status, etag, len))
    }
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

/// (ppid, utime + stime in ticks) of every process.
fn processes() -> HashMap<u32, (u32, u64)> {
    let mut all = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // after "(comm)": state ppid ... utime(11) stime(12)
        all.insert(pid, (num(1) as u32, num(11) + num(12)));
    }
    all
}

#[derive(Clone, Copy)]
struct Snap {
    at: Instant,
    server: f64,
    children: f64,
    client: f64,
}

fn snap(server_pid: u32, tck: f64) -> Snap {
    let all = processes();
    let server = all.get(&server_pid).map_or(0, |p| p.1);
    let mut children = 0;
    let mut frontier = vec![server_pid];
    while let Some(parent) = frontier.pop() {
        for (pid, (ppid, ticks)) in &all {
            if *ppid == parent {
                children += ticks;
                frontier.push(*pid);
            }
        }
    }
    let client = all.get(&std::process::id()).map_or(0, |p| p.1);
    Snap {
        at: Instant::now(),
        server: server as f64 / tck,
        children: children as f64 / tck,
        client: client as f64 / tck,
    }
}

/// One measurement: `ops` operations of `bytes` each over `wall` seconds,
/// and the CPU seconds spent meanwhile.
/// (name, samples by server, whether it moves one large object)
type Workload<'a> = (&'a str, &'a HashMap<&'a str, Vec<Sample>>, bool);

#[derive(Clone, Copy, Default)]
struct Sample {
    ops: f64,
    bytes: f64,
    wall: f64,
    server: f64,
    children: f64,
    client: f64,
    errors: u64,
    p50_us: f64,
    p99_us: f64,
}

impl Sample {
    fn between(a: Snap, b: Snap, ops: f64, bytes: f64) -> Self {
        Self {
            ops,
            bytes,
            wall: (b.at - a.at).as_secs_f64(),
            server: b.server - a.server,
            children: b.children - a.children,
            client: b.client - a.client,
            ..Default::default()
        }
    }
    fn mb_s(&self) -> f64 {
        self.ops * self.bytes / self.wall / 1e6
    }
    fn ops_s(&self) -> f64 {
        self.ops / self.wall
    }
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

fn spread(v: &[f64]) -> (f64, f64) {
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

// ---------------------------------------------------------------- servers

struct Target {
    name: &'static str,
    creds: Creds,
    pid: u32,
    /// What sits under the server's process (mds: PostgreSQL).
    children_label: &'static str,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    /// Next small-object number per client.
    written: Vec<u64>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            for _ in 0..100 {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, child: &mut Child) -> bool {
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn start_peer(name: &'static str, bin: &str, notes: &mut Vec<String>) -> Option<Target> {
    if !Path::new(bin).exists() {
        notes.push(format!(
            "{name}: skipped, {bin} is not installed (scripts/bench storage installs it)"
        ));
        return None;
    }
    let port = free_port();
    let tmp = tempfile::Builder::new()
        .prefix("bench-peer-")
        .tempdir()
        .unwrap();
    let (ak, sk) = ("benchaccesskey", "benchsecretkey");
    let mut cmd = Command::new(bin);
    if name == "moto" {
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("TMPDIR", tmp.path());
    } else {
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ak, "--secret-key", sk])
            .arg(tmp.path());
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    if !wait_port(port, &mut child) {
        let _ = child.kill();
        notes.push(format!("{name}: skipped, {bin} did not start"));
        return None;
    }
    Some(Target {
        name,
        creds: Creds {
            host: format!("127.0.0.1:{port}"),
            access_key: ak.into(),
            secret_key: sk.into(),
        },
        pid: child.id(),
        children_label: "",
        child: Some(child),
        _tmp: Some(tmp),
        written: Vec::new(),
    })
}

fn mds_target(mds: &common::Mds) -> Target {
    let path = mds.data_dir.join("s3-admin.env");
    let text = (0..600)
        .find_map(|_| {
            let t = std::fs::read_to_string(&path)
                .ok()
                .filter(|t| t.contains("AWS_REGION"));
            if t.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            t
        })
        .expect("s3-admin.env");
    let var = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in s3-admin.env"))
            .to_string()
    };
    Target {
        name: "mds",
        creds: Creds {
            host: var("AWS_ENDPOINT_URL_S3")
                .trim_start_matches("http://")
                .to_string(),
            access_key: var("AWS_ACCESS_KEY_ID"),
            secret_key: var("AWS_SECRET_ACCESS_KEY"),
        },
        pid: mds.pid(),
        children_label: "postgres",
        child: None,
        _tmp: None,
        written: Vec::new(),
    }
}

// ---------------------------------------------------------------- workloads

fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(<Md5 as md5::Digest>::digest(data))
}

/// One PUT of `data` to `key` on a new connection; checks the ETag.
async fn put_object(t: &Target, key: &str, data: Bytes, md5: &str) -> Result<(), Error> {
    let mut conn = Conn::new(&t.creds);
    let (status, etag, _) = conn
        .call(Method::PUT, &format!("/{BUCKET}/{key}"), data)
        .await?;
    if status != 200 {
        return Err(format!("{} PUT {key}: HTTP {status}", t.name).into());
    }
    if etag != md5 {
        return Err(format!("{} PUT {key}: ETag {etag}, expected {md5}", t.name).into());
    }
    Ok(())
}

async fn get_object(t: &Target, key: &str, len: u64) -> Result<(), Error> {
    let mut conn = Conn::new(&t.creds);
    let (status, _, got) = conn
        .call(Method::GET, &format!("/{BUCKET}/{key}"), Bytes::new())
        .await?;
    if status != 200 || got != len {
        return Err(format!("{} GET {key}: HTTP {status}, {got} of {len} bytes", t.name).into());
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Put,
    Get,
}

/// `clients` connections doing `op` for warmup + measured seconds.
async fn small(
    t: &mut Target,
    op: Op,
    clients: usize,
    warmup: Duration,
    measured: Duration,
    tck: f64,
) -> Sample {
    if t.written.len() < clients {
        t.written.resize(clients, 0);
    }
    let start = Instant::now() + warmup;
    let end = start + measured;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let creds = t.creds.clone();
        let first = t.written[c];
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&creds);
            let mut template = vec![0u8; SMALL];
            fill(&mut template, 7 + c as u64);
            let (mut n, mut done, mut errors) = (first, 0u64, 0u64);
            let mut latencies: Vec<u32> = Vec::new();
            let mut first_error = None;
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let result = match op {
                    Op::Put => {
                        let mut body = BytesMut::from(&template[..]);
                        body[..16]
                            .copy_from_slice(&[(c as u64).to_le_bytes(), n.to_le_bytes()].concat());
                        let key = format!("/{BUCKET}/s/{c}/{n}");
                        n += 1;
                        conn.call(Method::PUT, &key, body.freeze()).await
                    }
                    Op::Get => {
                        let key = format!("/{BUCKET}/s/{c}/{}", n % first.max(1));
                        n += 1;
                        conn.call(Method::GET, &key, Bytes::new()).await
                    }
                };
                let ok = match &result {
                    Ok((200, _, len)) => op == Op::Put || *len == SMALL as u64,
                    _ => false,
                };
                let now = Instant::now();
                if !ok && first_error.is_none() {
                    first_error = Some(format!("{:?}", result.as_ref().map(|r| (r.0, r.2))));
                }
                if now >= start && now < end {
                    if ok {
                        done += 1;
                        latencies.push((now - began).as_micros() as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            (
                if op == Op::Put { n } else { first },
                done,
                errors,
                latencies,
                first_error,
            )
        }));
    }
    let server = t.pid;
    tokio::time::sleep_until(start.into()).await;
    let a = snap(server, tck);
    tokio::time::sleep_until(end.into()).await;
    let b = snap(server, tck);
    stop.store(true, Ordering::Relaxed);
    let (mut done, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
    for (c, task) in tasks.into_iter().enumerate() {
        let (n, d, e, l, first_error) = task.await.unwrap();
        t.written[c] = n;
        done += d;
        errors += e;
        latencies.extend(l);
        if let Some(err) = first_error {
            if e > 0 {
                eprintln!(
                    "  {} {:?}: client {c}: {err}",
                    t.name,
                    if op == Op::Put { "PUT" } else { "GET" }
                );
            }
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(0) as f64
    };
    let mut sample = Sample::between(a, b, done as f64, SMALL as f64);
    sample.errors = errors;
    sample.p50_us = pct(0.5);
    sample.p99_us = pct(0.99);
    sample
}

fn blob_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(ft) if ft.is_dir() => blob_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Seconds one `dd` takes.
fn dd(args: &[String]) -> f64 {
    let started = Instant::now();
    let out = Command::new("dd")
        .args(args)
        .stdout(Stdio::null())
        .output()
        .expect("dd");
    assert!(
        out.status.success(),
        "dd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------- report

fn fmt_range(v: &[f64], digits: usize) -> String {
    let (min, max) = spread(v);
    let f = |x: f64| {
        if digits == 0 {
            group(x)
        } else {
            format!("{x:.digits$}")
        }
    };
    format!("{} ({}-{})", f(median(v.to_vec())), f(min), f(max))
}

fn group(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn main() {
    let reps: usize = env_or("BENCH_REPS", 3);
    let large_mib: usize = env_or("BENCH_LARGE_MIB", 1024);
    let clients: usize = env_or("BENCH_CLIENTS", 32);
    let warmup = Duration::from_secs_f64(env_or("BENCH_WARMUP_SECS", 2.0));
    let measured = Duration::from_secs_f64(env_or("BENCH_SECS", 10.0));
    let dedup_mib: usize = env_or("BENCH_DEDUP_MIB", 100);
    let peers = std::env::var("BENCH_PEERS").unwrap_or_else(|_| "s3s-fs,moto".into());
    let tck = clk_tck();
    let large = large_mib * MIB;

    let mds = common::Mds::start();
    let mut notes = Vec::new();
    let mut targets = vec![mds_target(&mds)];
    for peer in peers.split(',').map(str::trim) {
        let started = match peer {
            "s3s-fs" => {
                let bin =
                    std::env::var("S3S_FS_BIN").unwrap_or_else(|_| "/tmp/s3s-fs/bin/s3s-fs".into());
                start_peer("s3s-fs", &bin, &mut notes)
            }
            "moto" => {
                let bin = std::env::var("MOTO_SERVER_BIN")
                    .unwrap_or_else(|_| "/tmp/moto-venv/bin/moto_server".into());
                start_peer("moto", &bin, &mut notes)
            }
            _ => None,
        };
        targets.extend(started);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for t in &targets {
        let (status, _, _) = rt
            .block_on(Conn::new(&t.creds).call(Method::PUT, &format!("/{BUCKET}"), Bytes::new()))
            .unwrap_or_else(|e| panic!("{}: create bucket: {e}", t.name));
        assert_eq!(status, 200, "{}: create bucket", t.name);
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    eprintln!(
        "storage bench: servers {names:?}, {reps} reps, {large_mib} MiB large, {clients} clients"
    );

    // Ceilings.
    let dd_file = mds.data_dir.join("dd-ceiling.bin");
    let (mut dd_write, mut dd_read, mut md5_rate) = (vec![], vec![], vec![]);
    for _ in 0..reps {
        let of = format!("of={}", dd_file.display());
        let args = [
            "if=/dev/zero",
            &of,
            "bs=1M",
            &format!("count={large_mib}"),
            "conv=fsync",
        ];
        let secs = dd(&args.map(String::from));
        dd_write.push(large as f64 / secs / 1e6);
        let iff = format!("if={}", dd_file.display());
        let secs = dd(&[iff, "of=/dev/null".into(), "bs=1M".into()]);
        dd_read.push(large as f64 / secs / 1e6);
    }
    let _ = std::fs::remove_file(&dd_file);
    eprintln!("  dd write {dd_write:.0?} MB/s, dd read {dd_read:.0?} MB/s");

    // Large: each rep new content; servers alternate.
    let mut large_put: HashMap<&str, Vec<Sample>> = HashMap::new();
    let mut large_get: HashMap<&str, Vec<Sample>> = HashMap::new();
    let mut failures: Vec<String> = Vec::new();
    let mut buf = BytesMut::zeroed(large);
    for rep in 0..reps {
        fill(&mut buf, 1 + rep as u64);
        let started = Instant::now();
        let md5 = md5_hex(&buf);
        md5_rate.push(large as f64 / started.elapsed().as_secs_f64() / 1e6);
        let data = buf.freeze();
        for t in &targets {
            let a = snap(t.pid, tck);
            let put = rt.block_on(put_object(t, "large", data.clone(), &md5));
            let b = snap(t.pid, tck);
            let got = put.and_then(|()| rt.block_on(get_object(t, "large", large as u64)));
            let c = snap(t.pid, tck);
            match got {
                Ok(()) => {
                    let put = Sample::between(a, b, 1.0, large as f64);
                    let get = Sample::between(b, c, 1.0, large as f64);
                    eprintln!(
                        "  rep {rep} {}: large PUT {:.0} MB/s, GET {:.0} MB/s",
                        t.name,
                        put.mb_s(),
                        get.mb_s()
                    );
                    large_put.entry(t.name).or_default().push(put);
                    large_get.entry(t.name).or_default().push(get);
                }
                Err(e) => {
                    eprintln!("  rep {rep} {}: large failed: {e}", t.name);
                    failures.push(format!("{}: large PUT/GET failed: {e}", t.name));
                }
            }
        }
        buf = data
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    }
    eprintln!("  md5 {md5_rate:.0?} MB/s");

    // Small.
    let mut small_put: HashMap<&str, Vec<Sample>> = HashMap::new();
    let mut small_get: HashMap<&str, Vec<Sample>> = HashMap::new();
    for rep in 0..reps {
        for t in targets.iter_mut() {
            let s = rt.block_on(small(t, Op::Put, clients, warmup, measured, tck));
            eprintln!(
                "  rep {rep} {}: 4 KiB PUT {:.0}/s ({} errors)",
                t.name,
                s.ops_s(),
                s.errors
            );
            small_put.entry(t.name).or_default().push(s);
        }
        for t in targets.iter_mut() {
            let s = rt.block_on(small(t, Op::Get, clients, warmup, measured, tck));
            eprintln!(
                "  rep {rep} {}: 4 KiB GET {:.0}/s ({} errors)",
                t.name,
                s.ops_s(),
                s.errors
            );
            small_get.entry(t.name).or_default().push(s);
        }
    }

    // Dedup: the same bytes under two keys (mds; s3s-fs for contrast).
    let mut dedup_rows = Vec::new();
    let mut dedup_extra = f64::NAN;
    {
        let mut data = BytesMut::zeroed(dedup_mib * MIB);
        fill(&mut data, 1000);
        let data = data.freeze();
        let md5 = md5_hex(&data);
        for t in &targets {
            let dir: PathBuf = match t.name {
                "mds" => mds.data_dir.join("storage/blobs"),
                "s3s-fs" => t._tmp.as_ref().unwrap().path().to_path_buf(),
                _ => continue,
            };
            let before = blob_bytes(&dir);
            let r1 = rt.block_on(put_object(t, "dedup-a", data.clone(), &md5));
            let after1 = blob_bytes(&dir);
            let r2 = rt.block_on(put_object(t, "dedup-b", data.clone(), &md5));
            let after2 = blob_bytes(&dir);
            if let Err(e) = r1.and(r2) {
                failures.push(format!("{}: dedup PUT failed: {e}", t.name));
            }
            let mib = |x: u64| x as f64 / MIB as f64;
            if t.name == "mds" {
                dedup_extra = mib(after2.saturating_sub(after1));
            }
            dedup_rows.push(format!(
                "| {} | {:.1} MiB | +{:.1} MiB | +{:.1} MiB |",
                t.name,
                mib(before),
                mib(after1.saturating_sub(before)),
                mib(after2.saturating_sub(after1)),
            ));
        }
    }

    // Report (Markdown, on stdout).
    let ceiling_put = median(dd_write.clone()).min(median(md5_rate.clone()));
    let ceiling_get = median(dd_read.clone());
    println!("\n### Ceilings ({reps} reps, {large_mib} MiB)\n");
    println!("| ceiling | MB/s, median (min-max) |\n|---|---|");
    println!(
        "| dd write, conv=fsync, data dir's filesystem | {} |",
        fmt_range(&dd_write, 0)
    );
    println!(
        "| dd read of it (page cache) | {} |",
        fmt_range(&dd_read, 0)
    );
    println!("| MD5, one core (md-5) | {} |", fmt_range(&md5_rate, 0));
    println!(
        "| per-stream PUT ceiling = min(dd write, MD5) | {} |",
        group(ceiling_put)
    );

    println!("\n### Throughput and CPU per operation\n");
    println!(
        "Large: one stream, {large_mib} MiB object, MB/s. Small: {SMALL} B objects, {clients} \
         keep-alive clients, ops/s over {:.0} s after {:.0} s warmup. Median (min-max) over {reps} \
         reps. CPU: utime+stime per operation (large: CPU seconds per GiB; small: CPU µs per \
         op), medians; server = the server process, +child = its descendants (mds: PostgreSQL); \
         util = server CPU / wall time (2 cores = 200%).\n",
        measured.as_secs_f64(),
        warmup.as_secs_f64()
    );
    println!("| workload | server | throughput | server CPU/op | +child CPU/op | client CPU/op | server util | p50 / p99 latency | errors |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let size = if large_mib.is_multiple_of(1024) {
        format!("{} GiB", large_mib / 1024)
    } else {
        format!("{large_mib} MiB")
    };
    let large_put_name: &str = Box::leak(format!("{size} PUT").into_boxed_str());
    let large_get_name: &str = Box::leak(format!("{size} GET").into_boxed_str());
    let workloads: [Workload<'_>; 4] = [
        (large_put_name, &large_put, true),
        (large_get_name, &large_get, true),
        ("4 KiB PUT", &small_put, false),
        ("4 KiB GET", &small_get, false),
    ];
    let mut medians: HashMap<(&str, &str), f64> = HashMap::new();
    for (workload, results, is_large) in workloads {
        for t in &targets {
            let Some(samples) = results.get(t.name) else {
                println!("| {workload} | {} | failed | | | | | | |", t.name);
                continue;
            };
            let rates: Vec<f64> = samples
                .iter()
                .map(|s| if is_large { s.mb_s() } else { s.ops_s() })
                .collect();
            medians.insert((workload, t.name), median(rates.clone()));
            let per_op = |f: fn(&Sample) -> f64| {
                let v = median(samples.iter().map(|s| f(s) / s.ops.max(1.0)).collect());
                if is_large {
                    format!("{:.2} s/GiB", v * (1u64 << 30) as f64 / s_bytes(samples))
                } else {
                    format!("{:.0} µs", v * 1e6)
                }
            };
            let child = if t.children_label.is_empty() {
                "-".to_string()
            } else {
                per_op(|s| s.children)
            };
            let util = median(
                samples
                    .iter()
                    .map(|s| (s.server + s.children) / s.wall * 100.0)
                    .collect(),
            );
            let latency = if is_large {
                "-".to_string()
            } else {
                format!(
                    "{:.1} / {:.1} ms",
                    median(samples.iter().map(|s| s.p50_us / 1e3).collect()),
                    median(samples.iter().map(|s| s.p99_us / 1e3).collect())
                )
            };
            let errors: u64 = samples.iter().map(|s| s.errors).sum();
            println!(
                "| {workload} | {} | {} {} | {} | {} | {} | {:.0}% | {latency} | {errors} |",
                t.name,
                fmt_range(&rates, 0),
                if is_large { "MB/s" } else { "/s" },
                per_op(|s| s.server),
                child,
                per_op(|s| s.client),
                util,
            );
        }
    }

    println!("\n### Targets (medians)\n");
    println!("| target | measured | met |\n|---|---|---|");
    let check = |what: String, value: f64, goal: f64| {
        let met = if value.is_nan() {
            "n/a"
        } else if value >= goal {
            "yes"
        } else {
            "**no**"
        };
        println!("| {what} (≥ {goal}) | {value:.2} | {met} |");
    };
    let m = |w: &str, s: &str| medians.get(&(w, s)).copied().unwrap_or(f64::NAN);
    check(
        format!("{large_put_name} / min(dd write, MD5)"),
        m(large_put_name, "mds") / ceiling_put,
        0.7,
    );
    check(
        format!("{large_get_name} / dd read"),
        m(large_get_name, "mds") / ceiling_get,
        0.7,
    );
    check(
        "4 KiB PUT ops/s / 1000".into(),
        m("4 KiB PUT", "mds") / 1000.0,
        1.0,
    );
    check(
        "4 KiB GET ops/s / 5000".into(),
        m("4 KiB GET", "mds") / 5000.0,
        1.0,
    );
    for (workload, _, _) in workloads {
        if names.contains(&"moto") {
            check(
                format!("{workload}: mds / moto"),
                m(workload, "mds") / m(workload, "moto"),
                2.0,
            );
        }
    }
    if names.contains(&"s3s-fs") {
        for (workload, _, _) in workloads {
            let goal = if workload.contains("GET") { 1.0 } else { 0.7 };
            check(
                format!("{workload}: mds / s3s-fs"),
                m(workload, "mds") / m(workload, "s3s-fs"),
                goal,
            );
        }
    }
    println!(
        "| second identical {dedup_mib} MiB upload adds ~0 bytes | +{dedup_extra:.2} MiB | {} |",
        if dedup_extra < 1.0 { "yes" } else { "**no**" }
    );

    println!("\n### Dedup ({dedup_mib} MiB, same bytes under two keys; bytes under the blob directory)\n");
    println!("| server | before | first PUT | second PUT |\n|---|---|---|---|");
    for row in dedup_rows {
        println!("{row}");
    }
    for note in notes.iter().chain(&failures) {
        println!("\nNote: {note}");
    }
    drop(targets);
    drop(mds);
}

fn s_bytes(samples: &[Sample]) -> f64 {
    samples.first().map_or(1.0, |s| s.bytes)
}
