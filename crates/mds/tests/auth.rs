//! End-user auth through the real binary: users outlive restarts and
//! kill -9, the CLI, what is at rest (argon2id, no token in plaintext), and
//! deletion only on an explicit, confirmed delete.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{query, Mds};
use reqwest::blocking::Client;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

fn post(url: &str, body: Value) -> (u16, Value) {
    let response = Client::new().post(url).json(&body).send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn get_user(auth_url: &str, token: &str) -> u16 {
    Client::new()
        .get(format!("{auth_url}/user"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn login(auth_url: &str, email: &str) -> (u16, Value) {
    post(
        &format!("{auth_url}/token?grant_type=password"),
        json!({ "email": email, "password": PASSWORD }),
    )
}

#[test]
fn users_outlive_restarts_and_go_only_with_a_confirmed_delete() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "shop"}))
        .expect(201);
    // Through the CLI, as an operator would.
    let (ok, out, err) = mds.cli(&["auth", "enable", "-p", "shop", "--token-expiry-sec", "600"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("token_expiry_sec") && out.contains("600"),
        "{out}"
    );
    let (ok, out, _) = mds.cli(&["--json", "auth", "status", "-p", "shop"]);
    assert!(ok);
    let status: Value = serde_json::from_str(&out).unwrap();
    let auth_url = status["data"]["auth_url"].as_str().unwrap().to_string();
    assert_eq!(mds.resolved_env("shop", "production")["AUTH_URL"], auth_url);

    let (code, session) = post(
        &format!("{auth_url}/signup"),
        json!({ "email": "Ada@Example.com", "password": PASSWORD }),
    );
    assert_eq!(code, 200, "{session}");
    let token = session["access_token"].as_str().unwrap().to_string();
    let refresh = session["refresh_token"].as_str().unwrap().to_string();

    // At rest: an argon2id hash, and only hashes of tokens.
    let pg = mds.superuser_config();
    let rows = query(&pg, "SELECT email, password_hash FROM auth_users");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "ada@example.com");
    assert!(rows[0]
        .get::<_, String>(1)
        .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    let dump: i64 = query(
        &pg,
        &format!(
            "SELECT count(*) FROM auth_refresh_tokens t, auth_users u
             WHERE position('{refresh}' in encode(t.token_hash, 'escape')) > 0
                OR position('{PASSWORD}' in u.password_hash) > 0"
        ),
    )[0]
    .get(0);
    assert_eq!(dump, 0);

    let (ok, out, _) = mds.cli(&["auth", "users", "-p", "shop"]);
    assert!(ok && out.contains("ada@example.com"), "{out}");
    let (ok, out, _) = mds.cli(&["auth", "mail", "-p", "shop", "-e", "staging"]);
    assert!(ok && out.contains("no mail"), "{out}");
    let (ok, out, err) = mds.cli(&["auth", "rotate-keys", "-p", "shop"]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("retired").count(), 1, "{out}");
    // Rotation logs nobody out.
    assert_eq!(get_user(&auth_url, &token), 200);

    // A restart and a kill -9 keep users, sessions and the secret.
    let root = mds.root.clone();
    let mut mds = mds;
    mds.stop();
    let mut mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(get_user(&auth_url.replace_port(&mds), &token), 200);
    mds.kill9();
    let mds = Mds::start_in(&root, &[], &[]).unwrap_or_else(|log| panic!("{log}"));
    let auth_url = auth_url.replace_port(&mds);
    let (code, again) = login(&auth_url, "ada@example.com");
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["user"]["id"], session["user"]["id"]);

    // Disabling keeps users; only a confirmed delete removes them.
    let (ok, _, err) = mds.cli(&["auth", "disable", "-p", "shop"]);
    assert!(ok, "{err}");
    assert_eq!(login(&auth_url, "ada@example.com").0, 404);
    assert!(!mds
        .resolved_env("shop", "production")
        .contains_key("AUTH_URL"));
    mds.delete("/api/v1/projects/shop/data-services/auth")
        .expect_error(409, "CONFIRMATION_REQUIRED");
    assert_eq!(query(&pg_of(&mds), "SELECT 1 FROM auth_users").len(), 1);
    mds.delete("/api/v1/projects/shop/data-services/auth?confirm=auth")
        .expect(200);
    common::wait_until(std::time::Duration::from_secs(10), || {
        query(&pg_of(&mds), "SELECT 1 FROM auth_users").is_empty()
    })
    .expect("users deleted with their service");
}

fn pg_of(mds: &Mds) -> tokio_postgres::Config {
    mds.superuser_config()
}

/// A URL of the first server, on the port the restarted one listens on.
trait ReplacePort {
    fn replace_port(&self, mds: &Mds) -> String;
}

impl ReplacePort for String {
    fn replace_port(&self, mds: &Mds) -> String {
        let path = &self[self.find("/auth/v1/").unwrap()..];
        format!("{}{path}", mds.url)
    }
}
