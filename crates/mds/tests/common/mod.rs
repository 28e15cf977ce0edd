//! Test harness: starts the real `mds` binary on 127.0.0.1:0 with a fresh
//! data dir and its managed Postgres, and talks to it over HTTP.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::blocking::{Client, Response};
use reqwest::Method;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mds");

/// A running `mds server`. Stopped with SIGTERM when dropped.
pub struct Mds {
    child: Option<Child>,
    pub root: PathBuf,
    pub data_dir: PathBuf,
    pub url: String,
    pub admin_key: String,
    http: Client,
    _tmp: Option<tempfile::TempDir>,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "unexpected answer: {}", self.body);
        self
    }

    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Self {
        assert_eq!(self.status, status, "unexpected answer: {}", self.body);
        assert_eq!(self.code(), code, "unexpected answer: {}", self.body);
        assert!(
            self.body["error"]["request_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "error without request_id: {}",
            self.body
        );
        self
    }
}

impl Mds {
    /// A fresh server in a new temporary directory.
    pub fn start() -> Self {
        Self::start_with(&[], &[])
    }

    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("mds-test-")
            .tempdir()
            .expect("temp dir");
        let root = tmp.path().to_path_buf();
        let mut mds = Self::start_in(&root, args, env).unwrap_or_else(|log| {
            panic!("mds did not start; its log:\n{log}");
        });
        mds._tmp = Some(tmp);
        mds
    }

    /// Starts a server on `root/data`; on failure returns its log.
    pub fn start_in(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Self, String> {
        let data_dir = root.join("data");
        let child = spawn_server(root, args, env);
        let mut mds = Self {
            child: Some(child),
            root: root.to_path_buf(),
            data_dir,
            url: String::new(),
            admin_key: String::new(),
            http: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            _tmp: None,
        };
        mds.wait_ready(Duration::from_secs(90))?;
        let from_env = env
            .iter()
            .find(|(k, _)| *k == "MDS_ADMIN_API_KEY")
            .map(|(_, v)| v.to_string());
        mds.admin_key = from_env.unwrap_or_else(|| {
            fs::read_to_string(mds.data_dir.join("admin-api-key"))
                .expect("admin-api-key")
                .trim()
                .to_string()
        });
        Ok(mds)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("exited with {status}\n{}", self.log()));
            }
            if self.url.is_empty() {
                // A server.json left by a killed server names another pid.
                let pid = self.pid() as u64;
                if let Ok(text) = fs::read_to_string(self.data_dir.join("server.json")) {
                    if let Ok(info) = serde_json::from_str::<Value>(&text) {
                        if info["pid"].as_u64() == Some(pid) {
                            self.url = info["url"].as_str().unwrap_or_default().to_string();
                        }
                    }
                }
            }
            if !self.url.is_empty() {
                if let Ok(r) = self.http.get(format!("{}/healthz", self.url)).send() {
                    if r.status() == 200 {
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("not ready within {limit:?}\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("mds.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, then wait for a clean exit (asserted).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "mds exited with {status}\n{}", self.log());
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("mds did not stop within 30 s\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// kill -9 mds itself (its postgres survives, orphaned).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The managed postmaster's pid, from its pid file.
    pub fn postgres_pid(&self) -> u32 {
        let text = fs::read_to_string(self.data_dir.join("engines/postgres/data/postmaster.pid"))
            .expect("postmaster.pid");
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    pub fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        answer(request.send().expect("request"))
    }

    pub fn raw(&self) -> &Client {
        &self.http
    }

    pub fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, Some(&self.admin_key), None)
    }

    pub fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(&self.admin_key), Some(&body))
    }

    pub fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(&self.admin_key), Some(&body))
    }

    pub fn patch(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PATCH, path, Some(&self.admin_key), Some(&body))
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, Some(&self.admin_key), None)
    }

    /// A new API key with these scopes (created by the admin key).
    pub fn key_with(&self, scopes: &[&str]) -> String {
        let body = serde_json::json!({ "name": "test", "scopes": scopes });
        let created = self.post("/api/v1/api-keys", body).expect(201);
        created.data()["token"].as_str().unwrap().to_string()
    }

    /// A superuser connection config for the managed postgres, opened with
    /// the data dir's own master key, as an operator would.
    pub fn superuser_config(&self) -> tokio_postgres::Config {
        let key = fs::read_to_string(self.data_dir.join("master.key")).unwrap();
        let master = mds_crypto::MasterKey::from_hex(&key).unwrap();
        let sealed = fs::read(self.data_dir.join("engines/postgres.secret")).unwrap();
        let password = master
            .open_string("engine:postgres:superuser", &sealed)
            .unwrap();
        let meta: Value =
            serde_json::from_slice(&fs::read(self.data_dir.join("engines/postgres.json")).unwrap())
                .unwrap();
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(meta["port"].as_u64().unwrap() as u16)
            .user("mds_admin")
            .password(password.as_str())
            .dbname("mds_control");
        config
    }

    /// Runs the CLI against this server; returns (exit ok, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new(BIN)
            .args(args)
            .env_remove("MIOSA_BASE_URL")
            .env_remove("MIOSA_API_KEY")
            .env_remove("MDS_DATA_DIR")
            .env("MIOSA_BASE_URL", &self.url)
            .env("MIOSA_API_KEY", &self.admin_key)
            .stdin(Stdio::null())
            .output()
            .expect("run the CLI");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

impl Drop for Mds {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn spawn_server(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let data_dir = root.join("data");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("mds.log"))
        .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .args(args)
        .env_remove("MDS_MASTER_KEY")
        .env_remove("MDS_ADMIN_API_KEY")
        .env_remove("MDS_POSTGRES_URL")
        .env("MDS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn mds")
}

pub fn answer(response: Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        body,
        headers,
    }
}

/// Polls `f` until it returns true or `limit` passes; returns the time taken.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

/// Runs a future on a fresh runtime (tests are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs one query on the control database as superuser.
pub fn query(config: &tokio_postgres::Config, sql: &str) -> Vec<tokio_postgres::Row> {
    block_on(async {
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
        let task = tokio::spawn(conn);
        let rows = client.query(sql, &[]).await.unwrap();
        drop(client);
        let _ = task.await;
        rows
    })
}

impl Mds {
    /// The revealed environment of (project, environment), by name.
    pub fn resolved_env(
        &self,
        project: &str,
        environment: &str,
    ) -> std::collections::BTreeMap<String, String> {
        let answer = self
            .get(&format!(
                "/api/v1/projects/{project}/env?env={environment}&reveal=true"
            ))
            .expect(200);
        answer.data()["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_string(),
                    v["value"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Attaches Postgres to `project` and waits until every binding runs.
    pub fn attach_postgres(&self, project: &str, body: Value) -> Value {
        let answer = self
            .post(
                &format!("/api/v1/projects/{project}/data-services?wait=true"),
                body,
            )
            .expect(201);
        let service = answer.data().clone();
        assert_eq!(service["state"], "running", "{service}");
        service
    }
}

/// Runs the real `psql` client: (success, stdout, stderr).
pub fn psql(url: &str, sql: &str) -> (bool, String, String) {
    psql_with(&[url], &[], sql)
}

pub fn psql_with(args: &[&str], env: &[(&str, &str)], sql: &str) -> (bool, String, String) {
    let output = Command::new("psql")
        .args(args)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-tAc", sql])
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGUSER")
        .env_remove("PGPASSWORD")
        .env_remove("PGDATABASE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("psql (postgresql-client) is installed");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{database}")
}

/// Runs the real `redis-cli` against `url`: (success, stdout, stderr).
/// redis-cli exits 0 on server errors, so errors show in stdout.
pub fn redis_cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new("redis-cli")
        .args(["--no-auth-warning", "-u", url])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli (redis-tools) is installed");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
