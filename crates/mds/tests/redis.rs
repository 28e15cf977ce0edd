//! Managed Redis against real peers: `redis-cli`, real redis-server
//! processes, and the real binary's supervisor.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{redis_cli, wait_until, Mds};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

fn attach_redis(mds: &Mds, project: &str, body: serde_json::Value) -> serde_json::Value {
    let answer = mds
        .post(
            &format!("/api/v1/projects/{project}/data-services?wait=true"),
            body,
        )
        .expect(201);
    assert_eq!(answer.data()["state"], "running", "{}", answer.body);
    answer.data().clone()
}

/// `redis://user:password@host:port/0` with another user or password.
fn with_credentials(url: &str, user: &str, password: &str) -> String {
    let (_, rest) = url.split_once('@').unwrap();
    format!("redis://{user}:{password}@{rest}")
}

fn parts(url: &str) -> (String, String) {
    let creds = url
        .trim_start_matches("redis://")
        .split('@')
        .next()
        .unwrap();
    let (user, password) = creds.split_once(':').unwrap();
    (user.to_string(), password.to_string())
}

#[test]
fn each_environment_gets_its_own_redis_reachable_only_with_its_credentials() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "shop"}))
        .expect(201);
    mds.post("/api/v1/projects", json!({"name": "blog"}))
        .expect(201);
    attach_redis(&mds, "shop", json!({"type": "redis"}));
    attach_redis(&mds, "blog", json!({"type": "redis"}));
    let prod = mds.resolved_env("shop", "production")["REDIS_URL"].clone();
    let staging = mds.resolved_env("shop", "staging")["REDIS_URL"].clone();
    let blog = mds.resolved_env("blog", "production")["REDIS_URL"].clone();
    assert!(prod.starts_with("redis://shop__production:"));
    assert_ne!(prod, staging);

    assert_eq!(redis_cli(&staging, &["SET", "greeting", "hi"]).1, "OK");
    assert_eq!(redis_cli(&staging, &["GET", "greeting"]).1, "hi");
    assert_eq!(redis_cli(&prod, &["GET", "greeting"]).1, "");
    // Expiry works.
    redis_cli(&staging, &["SET", "short", "x", "PX", "150"]);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(redis_cli(&staging, &["EXISTS", "short"]).1, "0");

    // Another environment's or project's credentials: WRONGPASS.
    let (prod_user, prod_pass) = parts(&prod);
    let (blog_user, blog_pass) = parts(&blog);
    for forged in [
        with_credentials(&staging, &prod_user, &prod_pass),
        with_credentials(&prod, &blog_user, &blog_pass),
        with_credentials(&prod, "default", ""),
        with_credentials(&prod, &prod_user, "not-the-password"),
    ] {
        let (_, out, err) = redis_cli(&forged, &["PING"]);
        assert!(
            out.contains("WRONGPASS")
                || err.contains("WRONGPASS")
                || out.contains("NOAUTH")
                || err.contains("NOAUTH"),
            "{forged}: {out} {err}"
        );
    }
    // No login at all: the default user is off.
    let port = prod.rsplit(':').next().unwrap().trim_end_matches("/0");
    let (_, out, err) = redis_cli(&format!("redis://127.0.0.1:{port}/0"), &["GET", "x"]);
    assert!(
        out.contains("NOAUTH") || err.contains("NOAUTH"),
        "{out} {err}"
    );
    // The instance is theirs, its settings are not.
    for command in [
        ["CONFIG", "GET", "dir"],
        ["ACL", "LIST", ""],
        ["SHUTDOWN", "NOSAVE", ""],
    ] {
        let args: Vec<&str> = command.iter().copied().filter(|a| !a.is_empty()).collect();
        let (_, out, _) = redis_cli(&prod, &args);
        assert!(out.contains("NOPERM"), "{args:?}: {out}");
    }
    assert_eq!(redis_cli(&prod, &["PING"]).1, "PONG");
}

#[test]
fn redis_data_survives_a_killed_server_an_mds_restart_and_a_killed_mds() {
    let mut mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "keep"}))
        .expect(201);
    let service = attach_redis(&mds, "keep", json!({"type": "redis"}));
    let url = mds.resolved_env("keep", "production")["REDIS_URL"].clone();
    assert_eq!(redis_cli(&url, &["SET", "order", "42"]).1, "OK");
    // appendfsync everysec: give the AOF its second.
    std::thread::sleep(Duration::from_millis(1500));

    let binding = service["bindings"][0]["id"].as_str().unwrap().to_string();
    let pid_file = mds
        .data_dir
        .join(format!("engines/redis/{binding}/redis.pid"));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let back = wait_until(Duration::from_secs(10), || {
        redis_cli(&url, &["GET", "order"]).1 == "42"
    });
    assert!(back.is_some(), "{}", mds.log());

    let root = mds.root.clone();
    mds.stop();
    let mut mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    // Injected again, unchanged, once the instance is back (`starting`
    // until then).
    let injected = wait_until(Duration::from_secs(10), || {
        mds.resolved_env("keep", "production").get("REDIS_URL") == Some(&url)
    });
    assert!(injected.is_some(), "{}", mds.log());
    let back = wait_until(Duration::from_secs(10), || {
        redis_cli(&url, &["GET", "order"]).1 == "42"
    });
    assert!(back.is_some(), "{}", mds.log());

    mds.kill9();
    let mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    let back = wait_until(Duration::from_secs(10), || {
        redis_cli(&url, &["GET", "order"]).1 == "42"
    });
    assert!(back.is_some(), "{}", mds.log());
    let mut mds = mds;
    mds.stop();
    eprintln!("{}", mds.log());
}

#[test]
fn after_a_restart_a_redis_binding_reads_running_only_once_it_answers() {
    // Owned here: each restart replaces the `Mds`, which must not take the
    // data dir with it.
    let tmp = tempfile::tempdir().unwrap();
    let mut mds = Mds::start_in(tmp.path(), &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    mds.post("/api/v1/projects", json!({"name": "warm"}))
        .expect(201);
    attach_redis(&mds, "warm", json!({"type": "redis"}));
    let urls: std::collections::BTreeMap<String, String> = ["production", "staging"]
        .into_iter()
        .map(|env| {
            let url = mds.resolved_env("warm", env)["REDIS_URL"].clone();
            assert_eq!(redis_cli(&url, &["SET", "k", env]).1, "OK");
            (env.to_string(), url)
        })
        .collect();
    let root = tmp.path().to_path_buf();
    for how in ["a clean restart", "kill -9 of mds"] {
        if how == "a clean restart" {
            mds.stop();
        } else {
            mds.kill9();
        }
        // Polled from the moment /healthz says ready: whenever a binding
        // reads `running`, its own REDIS_URL must answer AUTH and PING.
        mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
        let mut lies = Vec::new();
        let all_running = wait_until(Duration::from_secs(20), || {
            let services = mds.get("/api/v1/projects/warm/data-services");
            let bindings = services.data()[0]["bindings"].as_array().cloned();
            let bindings = bindings.unwrap_or_default();
            let mut running = 0;
            for b in &bindings {
                if b["state"] != "running" {
                    continue;
                }
                running += 1;
                let env = b["environment"].as_str().unwrap_or_default();
                let (_, out, err) = redis_cli(&urls[env], &["PING"]);
                if out != "PONG" {
                    lies.push(format!("{env} read running, PING said: {out} {err}"));
                }
            }
            running == bindings.len() && running > 0
        });
        assert!(all_running.is_some(), "after {how}: {}", mds.log());
        assert!(lies.is_empty(), "after {how}: {lies:#?}");
        for (env, url) in &urls {
            assert_eq!(redis_cli(url, &["GET", "k"]).1, *env, "after {how}");
        }
    }
}

/// Writes ~200 KB per call through a script until the server refuses.
fn fill(url: &str, calls: usize) -> Option<String> {
    for call in 0..calls {
        let script = format!(
            "for i=1,2000 do redis.call('SET','k{call}_'..i,string.rep('x',100)) end return 1"
        );
        let (_, out, _) = redis_cli(url, &["EVAL", &script, "0"]);
        if out.contains("OOM") {
            return Some(out);
        }
    }
    None
}

#[test]
fn maxmemory_refuses_with_noeviction_and_evicts_with_allkeys_lru() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "mem"}))
        .expect(201);
    attach_redis(
        &mds,
        "mem",
        json!({"type": "redis", "maxmemory": "2mb", "environment": "production"}),
    );
    attach_redis(
        &mds,
        "mem",
        json!({"type": "redis", "name": "cache", "maxmemory": "2mb", "eviction": "allkeys-lru", "environment": "production"}),
    );
    let env = mds.resolved_env("mem", "production");
    let strict = &env["REDIS_URL"];
    let cache = &env["CACHE_REDIS_URL"];
    let refused = fill(strict, 60);
    assert!(refused.is_some(), "noeviction never refused a write");
    assert!(fill(cache, 60).is_none(), "allkeys-lru refused a write");
    let keys: u64 = redis_cli(cache, &["DBSIZE"]).1.parse().unwrap();
    assert!(keys < 60 * 2000, "nothing was evicted ({keys} keys)");
    assert!(redis_cli(cache, &["CONFIG", "GET", "maxmemory"])
        .1
        .contains("NOPERM"));
}

#[test]
fn redis_bad_input_names_its_field_and_a_second_one_needs_a_name() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "app"}))
        .expect(201);
    let base = "/api/v1/projects/app/data-services";
    for (body, field) in [
        (json!({"type": "redis", "maxmemory": "lots"}), "maxmemory"),
        (json!({"type": "redis", "maxmemory": "10kb"}), "maxmemory"),
        (
            json!({"type": "redis", "eviction": "sometimes"}),
            "eviction",
        ),
        (json!({"type": "postgres", "maxmemory": "1gb"}), "maxmemory"),
    ] {
        let r = mds.post(base, body).expect_error(422, "VALIDATION_ERROR");
        assert_eq!(r.body["error"]["details"]["field"], field);
    }
    attach_redis(&mds, "app", json!({"type": "redis"}));
    mds.post(base, json!({"type": "redis"}))
        .expect_error(409, "DATA_SERVICE_NAME_REQUIRED");
    attach_redis(&mds, "app", json!({"type": "redis", "name": "queue"}));
    let env = mds.resolved_env("app", "staging");
    assert!(env.contains_key("REDIS_URL") && env.contains_key("QUEUE_REDIS_URL"));
    assert_ne!(env["REDIS_URL"], env["QUEUE_REDIS_URL"]);
}

#[test]
fn redis_through_the_databases_routes() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "db"}))
        .expect(201);
    let created = mds
        .post(
            "/api/v1/databases?wait=true",
            json!({"engine": "redis", "project_id": "db", "eviction": "allkeys-lru"}),
        )
        .expect(201);
    assert_eq!(created.data()["engine"], "redis");
    let id = created.data()["id"].as_str().unwrap().to_string();
    let creds = mds
        .get(&format!("/api/v1/databases/{id}/credentials"))
        .expect(200);
    let url = creds.data()["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("redis://"));
    assert_eq!(redis_cli(&url, &["SET", "a", "1"]).1, "OK");
    std::thread::sleep(Duration::from_millis(1200));
    let stopped = mds
        .post(&format!("/api/v1/databases/{id}/stop"), json!({}))
        .expect(200);
    assert_eq!(stopped.data()["state"], "stopped");
    assert!(redis_cli(&url, &["PING"]).1 != "PONG");
    let started = mds
        .post(&format!("/api/v1/databases/{id}/start"), json!({}))
        .expect(200);
    assert_eq!(started.data()["state"], "running");
    assert_eq!(redis_cli(&url, &["GET", "a"]).1, "1");
    mds.post(&format!("/api/v1/databases/{id}/restart"), json!({}))
        .expect(200);
    assert_eq!(redis_cli(&url, &["GET", "a"]).1, "1");
    mds.delete(&format!("/api/v1/databases/{id}")).expect(200);
    let gone = wait_until(Duration::from_secs(20), || {
        mds.get(&format!("/api/v1/databases/{id}")).status == 404
    });
    assert!(gone.is_some());
    assert!(redis_cli(&url, &["PING"]).1 != "PONG");
    let dirs = std::fs::read_dir(mds.data_dir.join("engines/redis"))
        .unwrap()
        .count();
    assert_eq!(dirs, 0, "the data was not removed");
}

#[test]
fn external_redis_confines_each_binding_to_its_prefix() {
    // A plain redis-server stands in for an operator's existing Redis.
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = KillOnDrop(
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--requirepass",
                "admin-pass",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    let admin = format!("redis://default:admin-pass@127.0.0.1:{port}/0");
    assert!(
        wait_until(Duration::from_secs(10), || redis_cli(&admin, &["PING"]).1
            == "PONG")
        .is_some()
    );

    let mds = Mds::start_with(&["--redis-url", &admin], &[]);
    mds.post("/api/v1/projects", json!({"name": "ext"}))
        .expect(201);
    mds.post("/api/v1/projects", json!({"name": "other"}))
        .expect(201);
    attach_redis(&mds, "ext", json!({"type": "redis"}));
    attach_redis(&mds, "other", json!({"type": "redis"}));
    let env = mds.resolved_env("ext", "production");
    assert!(
        env.contains_key("REDIS_KEY_PREFIX"),
        "{env:?}\n{}",
        mds.log()
    );
    let url = &env["REDIS_URL"];
    let prefix = &env["REDIS_KEY_PREFIX"];
    assert_eq!(prefix, "ext__production:");
    assert!(url.ends_with(&format!("@127.0.0.1:{port}/0")));
    let (user, _) = parts(url);

    let mine = format!("{prefix}cart");
    assert_eq!(redis_cli(url, &["SET", &mine, "3"]).1, "OK");
    assert_eq!(redis_cli(url, &["GET", &mine]).1, "3");
    for args in [
        vec!["SET", "unprefixed", "x"],
        vec!["GET", "other__production:cart"],
        vec!["PUBLISH", "global-channel", "x"],
        vec!["FLUSHALL"],
        vec!["CONFIG", "GET", "maxmemory"],
    ] {
        let (_, out, _) = redis_cli(url, &args);
        assert!(out.contains("NOPERM"), "{args:?}: {out}");
    }
    assert_eq!(
        redis_cli(url, &["PUBLISH", &format!("{prefix}events"), "x"]).1,
        "0"
    );
    // As the server's own ACL DRYRUN sees it.
    for command in [
        vec!["FLUSHALL"],
        vec!["CONFIG", "SET", "maxmemory", "1"],
        vec!["GET", "unprefixed"],
    ] {
        let mut args = vec!["ACL", "DRYRUN", user.as_str()];
        args.extend(command.iter().copied());
        let (_, out, _) = redis_cli(&admin, &args);
        assert!(out.contains("no permissions"), "{command:?}: {out}");
    }
    let other = mds.resolved_env("other", "production");
    assert!(redis_cli(&other["REDIS_URL"], &["GET", &mine])
        .1
        .contains("NOPERM"));

    // Deleting the service removes its user and its keys, and only those.
    redis_cli(&other["REDIS_URL"], &["SET", "other__production:keep", "1"]);
    let id = mds.get("/api/v1/projects/ext/data-services").data()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    mds.delete(&format!("/api/v1/databases/{id}")).expect(200);
    let gone = wait_until(Duration::from_secs(20), || {
        redis_cli(&admin, &["EXISTS", &mine]).1 == "0"
    });
    assert!(gone.is_some());
    assert_eq!(
        redis_cli(&admin, &["EXISTS", "other__production:keep"]).1,
        "1"
    );
    assert!(!redis_cli(&admin, &["ACL", "USERS"]).1.contains(&user));
}
