//! The HTTP contract, driven against the real binary and its managed
//! Postgres: envelopes, errors, projects, environments, variables, keys,
//! scopes and idempotency.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{answer, Mds};
use reqwest::Method;
use serde_json::{json, Value};

#[test]
fn error_contract_and_envelopes() {
    let mds = Mds::start();
    let health = mds
        .raw()
        .get(format!("{}/healthz", mds.url))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert!(health.headers().contains_key("x-request-id"));

    // Unknown route: a 404 in the envelope, with the request id in both places.
    let r = mds.get("/api/v1/nope").expect_error(404, "NOT_FOUND");
    assert_eq!(
        r.headers["x-request-id"].to_str().unwrap(),
        r.body["error"]["request_id"].as_str().unwrap()
    );
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));

    // No key, a wrong key, a malformed header.
    mds.call(Method::GET, "/api/v1/projects", None, None)
        .expect_error(401, "invalid_token");
    mds.call(Method::GET, "/api/v1/projects", Some("msk_wrong"), None)
        .expect_error(401, "invalid_token");
    let r = mds
        .raw()
        .get(format!("{}/api/v1/projects", mds.url))
        .header("authorization", "Basic abc")
        .send()
        .unwrap();
    assert_eq!(answer(r).expect(401).code(), "invalid_token");

    // Malformed JSON is a 400; a wrong type names its field in a 422.
    let r = mds
        .raw()
        .post(format!("{}/api/v1/projects", mds.url))
        .bearer_auth(&mds.admin_key)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .unwrap();
    answer(r).expect_error(400, "INVALID_JSON");
    let r = mds
        .post("/api/v1/projects", json!({"name": 42}))
        .expect_error(422, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"]["field"], "name");
    let r = mds
        .post("/api/v1/projects", json!({}))
        .expect_error(422, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"]["field"], "name");

    // Oversized bodies: 413 TOO_LARGE, with and without an Idempotency-Key.
    let big = json!({ "name": "x", "description": "y".repeat(2 * 1024 * 1024) });
    mds.post("/api/v1/projects", big.clone())
        .expect_error(413, "TOO_LARGE");
    let r = mds
        .raw()
        .post(format!("{}/api/v1/projects", mds.url))
        .bearer_auth(&mds.admin_key)
        .header("idempotency-key", "big-one")
        .json(&big)
        .send()
        .unwrap();
    answer(r).expect_error(413, "TOO_LARGE");

    // Wrong method: 405 in the envelope. /v1 is an alias of /api/v1.
    mds.call(
        Method::PUT,
        "/api/v1/projects",
        Some(&mds.admin_key),
        Some(&json!({})),
    )
    .expect_error(405, "METHOD_NOT_ALLOWED");
    mds.get("/v1/projects").expect(200);

    // After all of that the server still serves.
    mds.post("/api/v1/projects", json!({"name": "Still Here"}))
        .expect(201);
}

#[test]
fn projects_lifecycle() {
    let mds = Mds::start();
    let created = mds
        .post(
            "/api/v1/projects",
            json!({
                "name": "Clinic IQ",
                "description": "patients",
                "workspace_id": "ws_42",
                "external_user_id": "u-7",
                "metadata": {"team": "core"},
                "some_future_field": true
            }),
        )
        .expect(201);
    let p = created.data();
    let id = p["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("proj_"));
    assert_eq!(p["slug"], "clinic-iq");
    assert_eq!(p["workspace_id"], "ws_42");
    assert_eq!(p["external_user_id"], "u-7");
    assert_eq!(p["metadata"]["team"], "core");
    let envs: Vec<&str> = p["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(envs, ["production", "staging"]);
    assert_eq!(p["environments"][0]["is_default"], true);
    assert_eq!(p["default_environment_id"], p["environments"][0]["id"]);

    // By id and by slug.
    assert_eq!(
        mds.get(&format!("/api/v1/projects/{id}"))
            .expect(200)
            .data()["id"],
        id.as_str()
    );
    assert_eq!(
        mds.get("/api/v1/projects/clinic-iq").expect(200).data()["id"],
        id.as_str()
    );

    // A derived slug that is taken gets a suffix; a chosen one gets 409.
    let second = mds
        .post("/api/v1/projects", json!({"name": "Clinic IQ"}))
        .expect(201);
    assert_eq!(second.data()["slug"], "clinic-iq-2");
    let r = mds
        .post(
            "/api/v1/projects",
            json!({"name": "Other", "slug": "clinic-iq"}),
        )
        .expect_error(409, "PROJECT_SLUG_TAKEN");
    assert_eq!(r.body["error"]["details"]["field"], "slug");

    // Invalid names and slugs name their field.
    for (body, field) in [
        (json!({"name": "   "}), "name"),
        (json!({"name": "ok", "slug": "Bad_Slug"}), "slug"),
        (json!({"name": "ok", "slug": "-x"}), "slug"),
        (json!({"name": "ok", "metadata": [1]}), "metadata"),
        (json!({"name": "a\u{0007}b"}), "name"),
    ] {
        let r = mds
            .post("/api/v1/projects", body)
            .expect_error(422, "VALIDATION_ERROR");
        assert_eq!(r.body["error"]["details"]["field"], field);
    }

    // Lists are enveloped and paged.
    for i in 0..3 {
        mds.post("/api/v1/projects", json!({"name": format!("p{i}")}))
            .expect(201);
    }
    let page = mds.get("/api/v1/projects?page=1&page_size=2").expect(200);
    assert_eq!(page.data().as_array().unwrap().len(), 2);
    assert_eq!(page.body["page"]["total"], 5);
    assert_eq!(page.body["page"]["page_size"], 2);
    let last = mds.get("/api/v1/projects?page=3&page_size=2").expect(200);
    assert_eq!(last.data().as_array().unwrap().len(), 1);
    mds.get("/api/v1/projects?page_size=1000")
        .expect_error(422, "VALIDATION_ERROR");
    let ws = mds.get("/api/v1/projects?workspace_id=ws_42").expect(200);
    assert_eq!(ws.body["page"]["total"], 1);

    // Update; a slug clash is a 409 and changes nothing.
    let updated = mds
        .patch(
            &format!("/api/v1/projects/{id}"),
            json!({"name": "Clinic IQ 2", "slug": "ciq"}),
        )
        .expect(200);
    assert_eq!(updated.data()["slug"], "ciq");
    assert_eq!(updated.data()["description"], "patients");
    mds.patch("/api/v1/projects/ciq", json!({"slug": "clinic-iq-2"}))
        .expect_error(409, "PROJECT_SLUG_TAKEN");
    assert_eq!(
        mds.get("/api/v1/projects/ciq").expect(200).data()["name"],
        "Clinic IQ 2"
    );

    // Delete; afterwards a 404, for any id.
    mds.delete("/api/v1/projects/ciq").expect(200);
    mds.get(&format!("/api/v1/projects/{id}"))
        .expect_error(404, "NOT_FOUND");
    mds.delete(&format!("/api/v1/projects/{id}"))
        .expect_error(404, "NOT_FOUND");
    mds.get("/api/v1/projects/proj_01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .expect_error(404, "NOT_FOUND");
}

#[test]
fn environments_lifecycle() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "shop"}))
        .expect(201);
    let base = "/api/v1/projects/shop/environments";

    let qa = mds.post(base, json!({"name": "qa"})).expect(201);
    assert_eq!(qa.data()["kind"], "custom");
    let preview = mds.post(base, json!({"name": "preview/pr-42"})).expect(201);
    assert_eq!(preview.data()["slug"], "preview-pr-42");
    assert_eq!(preview.data()["kind"], "preview");
    // Named by encoded name, by slug, or by id.
    let preview_id = preview.data()["id"].as_str().unwrap();
    for reference in ["preview%2Fpr-42", "preview-pr-42", preview_id] {
        assert_eq!(
            mds.get(&format!("{base}/{reference}")).expect(200).data()["id"],
            preview_id
        );
    }
    let list = mds.get(base).expect(200);
    assert_eq!(list.data().as_array().unwrap().len(), 4);

    let r = mds
        .post(base, json!({"name": "qa"}))
        .expect_error(409, "ENVIRONMENT_NAME_TAKEN");
    assert_eq!(r.body["error"]["details"]["field"], "name");
    for bad in ["QA", "qa ", "../x", "a//b", ""] {
        let r = mds
            .post(base, json!({"name": bad}))
            .expect_error(422, "VALIDATION_ERROR");
        assert_eq!(r.body["error"]["details"]["field"], "name");
    }
    mds.post(base, json!({"name": "x", "kind": "weird"}))
        .expect_error(422, "VALIDATION_ERROR");

    // The default environment stays.
    mds.delete(&format!("{base}/production"))
        .expect_error(409, "ENVIRONMENT_IS_DEFAULT");
    mds.patch(&format!("{base}/production"), json!({"name": "prod"}))
        .expect_error(409, "ENVIRONMENT_IS_DEFAULT");

    let renamed = mds
        .patch(&format!("{base}/qa"), json!({"name": "qa-eu"}))
        .expect(200);
    assert_eq!(renamed.data()["slug"], "qa-eu");
    mds.get(&format!("{base}/qa"))
        .expect_error(404, "ENVIRONMENT_NOT_FOUND");

    mds.delete(&format!("{base}/qa-eu")).expect(200);
    mds.get(&format!("{base}/qa-eu"))
        .expect_error(404, "ENVIRONMENT_NOT_FOUND");
    // A deleted name can be used again; staging (not the default) can go.
    mds.post(base, json!({"name": "qa-eu"})).expect(201);
    mds.delete(&format!("{base}/staging")).expect(200);
    mds.get("/api/v1/projects/nope/environments")
        .expect_error(404, "NOT_FOUND");
}

#[test]
fn shared_variables_are_per_environment_sealed_and_masked() {
    let mds = Mds::start();
    mds.post("/api/v1/projects", json!({"name": "app"}))
        .expect(201);
    let base = "/api/v1/projects/app/shared-variables";

    let set = mds
        .put(
            base,
            json!({"env": "staging", "variables": {
                "API_BASE": "https://staging.example.com",
                "STRIPE_SECRET_KEY": "sk_test_abcdefghijklmnop"
            }}),
        )
        .expect(200);
    let rows = set.data().as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert!(row.get("value").is_none(), "a list leaked a value: {row}");
        assert_eq!(row["environment"], "staging");
    }
    assert_eq!(rows[0]["name"], "API_BASE");
    assert_eq!(rows[0]["preview"], "http…");
    assert_eq!(rows[0]["is_secret"], false);
    assert_eq!(rows[1]["is_secret"], true);
    assert_eq!(rows[1]["preview"], "••••••••");

    // An explicit flag wins over the name; the list form works too.
    mds.put(
        base,
        json!({"variables": [
            {"name": "API_BASE", "value": "https://example.com"},
            {"name": "FEATURE_X", "value": "on-for-everyone", "is_secret": true}
        ]}),
    )
    .expect(200);

    // One name, a value per environment.
    let prod = mds
        .get(&format!("{base}?env=production&reveal=true"))
        .expect(200);
    let prod_rows = prod.data().as_array().unwrap();
    assert_eq!(prod_rows.len(), 2);
    assert_eq!(prod_rows[0]["value"], "https://example.com");
    let staging = mds
        .get(&format!("{base}/API_BASE/reveal?env=staging"))
        .expect(200);
    assert_eq!(staging.data()["value"], "https://staging.example.com");

    // Revealing takes env:reveal; a plain key learns which scope it lacks.
    let plain = mds.key_with(&["env:read", "env:write", "projects:read"]);
    let r = mds
        .call(
            Method::GET,
            &format!("{base}?env=staging&reveal=true"),
            Some(&plain),
            None,
        )
        .expect_error(403, "insufficient_scope");
    assert_eq!(r.body["error"]["details"]["required_scope"], "env:reveal");
    mds.call(
        Method::GET,
        &format!("{base}/API_BASE/reveal?env=staging"),
        Some(&plain),
        None,
    )
    .expect_error(403, "insufficient_scope");
    mds.call(
        Method::GET,
        &format!("{base}?env=staging"),
        Some(&plain),
        None,
    )
    .expect(200);
    let read_only = mds.key_with(&["env:read"]);
    mds.call(
        Method::PUT,
        base,
        Some(&read_only),
        Some(&json!({"variables": {"A": "b"}})),
    )
    .expect_error(403, "insufficient_scope");

    // Bad input names its field and changes nothing.
    for body in [
        json!({"variables": {"1BAD": "x"}}),
        json!({"variables": {"A-B": "x"}}),
        json!({"variables": {}}),
        json!({"variables": {"OK": "x", "BAD NAME": "y"}}),
        json!({"variables": "nope"}),
        json!({}),
    ] {
        let r = mds.put(base, body).expect_error(422, "VALIDATION_ERROR");
        assert_eq!(r.body["error"]["details"]["field"], "variables");
    }
    assert!(mds.get(&format!("{base}/OK")).status == 404);
    mds.put(base, json!({"env": "nowhere", "variables": {"A": "b"}}))
        .expect_error(404, "ENVIRONMENT_NOT_FOUND");

    // Delete one.
    mds.delete(&format!("{base}/FEATURE_X")).expect(200);
    mds.delete(&format!("{base}/FEATURE_X"))
        .expect_error(404, "NOT_FOUND");

    // At rest: no plaintext value in the control database.
    let rows = common::query(
        &mds.superuser_config(),
        "SELECT name, sealed_value FROM shared_variables",
    );
    assert_eq!(rows.len(), 3);
    for row in rows {
        let sealed: Vec<u8> = row.get(1);
        let text = String::from_utf8_lossy(&sealed);
        for plaintext in ["example.com", "sk_test"] {
            assert!(!text.contains(plaintext), "plaintext at rest");
        }
    }
}

#[test]
fn api_keys_scopes_and_rotation() {
    let mds = Mds::start();
    let created = mds
        .post(
            "/api/v1/api-keys",
            json!({"name": "ci", "scopes": ["projects:read"]}),
        )
        .expect(201);
    let key = created.data().clone();
    let token = key["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("msk_"));
    assert_eq!(key["key"], token.as_str());
    let id = key["id"].as_str().unwrap().to_string();

    // Read works; write and key management name the missing scope.
    mds.call(Method::GET, "/api/v1/projects", Some(&token), None)
        .expect(200);
    let r = mds
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(&token),
            Some(&json!({"name": "x"})),
        )
        .expect_error(403, "insufficient_scope");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("projects:write"));
    mds.call(Method::GET, "/api/v1/api-keys", Some(&token), None)
        .expect_error(403, "insufficient_scope");

    // The default scope set; unknown scopes are a 422.
    let plain = mds
        .post("/api/v1/api-keys", json!({"name": "plain"}))
        .expect(201);
    let scopes: Vec<&str> = plain.data()["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(scopes.contains(&"projects:write") && !scopes.contains(&"env:reveal"));
    mds.post("/api/v1/api-keys", json!({"name": "x", "scopes": ["root"]}))
        .expect_error(422, "VALIDATION_ERROR");
    mds.post(
        "/api/v1/api-keys",
        json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
    )
    .expect_error(422, "VALIDATION_ERROR");

    // A key cannot hand out what it lacks.
    let manager = mds.key_with(&["api-keys:write", "api-keys:read", "projects:read"]);
    mds.call(
        Method::POST,
        "/api/v1/api-keys",
        Some(&manager),
        Some(&json!({"name": "escalate", "scopes": ["*"]})),
    )
    .expect_error(403, "insufficient_scope");
    mds.call(
        Method::POST,
        "/api/v1/api-keys",
        Some(&manager),
        Some(&json!({"name": "fine", "scopes": ["projects:read"]})),
    )
    .expect(201);

    // Lists and gets never show a secret.
    let list = mds.get("/api/v1/api-keys").expect(200);
    for k in list.data().as_array().unwrap() {
        assert!(k.get("token").is_none() && k.get("key").is_none(), "{k}");
    }
    assert!(mds
        .get(&format!("/api/v1/api-keys/{id}"))
        .expect(200)
        .data()
        .get("token")
        .is_none());

    // Scope changes take effect at once.
    mds.patch(
        &format!("/api/v1/api-keys/{id}"),
        json!({"scopes": ["env:read"]}),
    )
    .expect(200);
    mds.call(Method::GET, "/api/v1/projects", Some(&token), None)
        .expect_error(403, "insufficient_scope");

    // Rotation: the old value stops working, the new one works.
    let rotated = mds
        .post(&format!("/api/v1/api-keys/{id}/rotate"), json!({}))
        .expect(200);
    let new_token = rotated.data()["token"].as_str().unwrap().to_string();
    assert_ne!(new_token, token);
    mds.call(Method::GET, "/api/v1/projects", Some(&token), None)
        .expect_error(401, "invalid_token");
    mds.call(Method::GET, "/api/v1/projects/x", Some(&new_token), None)
        .expect_error(403, "insufficient_scope");

    // Revocation.
    mds.delete(&format!("/api/v1/api-keys/{id}")).expect(200);
    mds.call(Method::GET, "/api/v1/projects", Some(&new_token), None)
        .expect_error(401, "invalid_token");
    mds.get(&format!("/api/v1/api-keys/{id}"))
        .expect_error(404, "NOT_FOUND");

    // Only hashes at rest.
    let rows = common::query(
        &mds.superuser_config(),
        "SELECT token_hash, token_prefix FROM api_keys",
    );
    for row in rows {
        let hash: Vec<u8> = row.get(0);
        assert_eq!(hash.len(), 32);
        let prefix: String = row.get(1);
        assert!(prefix.len() <= 10, "{prefix}");
    }
}

#[test]
fn idempotency_keys_replay_and_refuse_mismatches() {
    let mds = Mds::start();
    let send = |key: &str, token: &str, body: &Value| {
        answer(
            mds.raw()
                .post(format!("{}/api/v1/projects", mds.url))
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(body)
                .send()
                .unwrap(),
        )
    };
    let body = json!({"name": "once"});
    let first = send("k-1", &mds.admin_key, &body).expect(201);
    let again = send("k-1", &mds.admin_key, &body).expect(201);
    assert_eq!(first.data()["id"], again.data()["id"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert!(again.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    send("k-1", &mds.admin_key, &json!({"name": "other"}))
        .expect_error(409, "IDEMPOTENCY_KEY_MISMATCH");
    assert_eq!(
        mds.get("/api/v1/projects").expect(200).body["page"]["total"],
        1
    );

    // Errors are replayed too (a 422 is the answer to that request).
    send("k-2", &mds.admin_key, &json!({"name": ""})).expect_error(422, "VALIDATION_ERROR");
    send("k-2", &mds.admin_key, &json!({"name": ""})).expect_error(422, "VALIDATION_ERROR");

    // Another caller's same key is its own record: no cross-key replay.
    let other = mds.key_with(&["projects:read", "projects:write"]);
    let theirs = send("k-1", &other, &body).expect(201);
    assert_ne!(theirs.data()["id"], first.data()["id"]);

    // The stored response (it may hold a new API key) is sealed at rest.
    let key_answer = answer(
        mds.raw()
            .post(format!("{}/api/v1/api-keys", mds.url))
            .bearer_auth(&mds.admin_key)
            .header("Idempotency-Key", "key-once")
            .json(&json!({"name": "replayed"}))
            .send()
            .unwrap(),
    )
    .expect(201);
    let token = key_answer.data()["token"].as_str().unwrap().to_string();
    let rows = common::query(
        &mds.superuser_config(),
        "SELECT sealed_body FROM idempotency_records",
    );
    for row in rows {
        let sealed: Vec<u8> = row.get(0);
        assert!(!String::from_utf8_lossy(&sealed).contains(&token));
    }
}
