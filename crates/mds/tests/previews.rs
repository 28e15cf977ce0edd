//! Previews with a time to live, through the real binary and its CLI: the
//! ttl's bounds, extend, and the purge once it has passed (a restore point
//! of the preview's data first, an audit event after). The clock is moved
//! the only honest way a test can: the stored expiry is set in the past.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{psql, query, wait_until, Mds};
use serde_json::json;

fn expires_at(answer: &serde_json::Value) -> DateTime<Utc> {
    answer["expires_at"].as_str().unwrap().parse().unwrap()
}

#[test]
fn a_preview_expires_on_time_leaving_its_data_in_a_restore_point() {
    let mds = Mds::start_with(&["--expiry-check", "1s"], &[]);
    let project = mds
        .post("/api/v1/projects", json!({ "name": "ttl" }))
        .expect(201)
        .data()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let envs = format!("/api/v1/projects/{project}/environments");

    // Bounds, and never on production or staging.
    for (body, why) in [
        (json!({ "name": "preview/a", "ttl": "30m" }), "out of range"),
        (json!({ "name": "preview/a", "ttl": "91d" }), "out of range"),
        (
            json!({ "name": "preview/a", "ttl": "soon" }),
            "expected a number",
        ),
        (
            json!({ "name": "qa", "kind": "staging", "ttl": "2h" }),
            "cannot expire",
        ),
    ] {
        let refused = mds.post(&envs, body.clone()).expect(422);
        let error = &refused.body["error"];
        assert_eq!(error["details"]["field"], "ttl", "{body}: {error}");
        assert!(error["message"].as_str().unwrap().contains(why), "{error}");
    }
    mds.post(&format!("{envs}/production/extend"), json!({ "ttl": "1d" }))
        .expect(422);

    // Created with 2h through the CLI; listed with its time left.
    let (ok, out, err) = mds.cli(&[
        "envs",
        "create",
        "preview/pr-42",
        "-p",
        &project,
        "--ttl",
        "2h",
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("It expires in 1h 59m") || out.contains("It expires in 2h 0m"),
        "{out}"
    );
    let preview = mds
        .get(&format!("{envs}/preview-pr-42"))
        .expect(200)
        .data()
        .clone();
    let first = expires_at(&preview);
    let (ok, out, _) = mds.cli(&["envs", "list", "-p", &project]);
    assert!(
        ok && out.contains("preview/pr-42") && out.contains("1h 5"),
        "{out}"
    );

    // Extended by a day, from its expiry; not past 90 days from now.
    let (ok, out, err) = mds.cli(&[
        "envs",
        "extend",
        "preview/pr-42",
        "-p",
        &project,
        "--ttl",
        "1d",
    ]);
    assert!(ok, "{out}{err}");
    let extended = expires_at(mds.get(&format!("{envs}/preview-pr-42")).expect(200).data());
    assert_eq!((extended - first).num_seconds(), 86400);
    mds.post(
        &format!("{envs}/preview-pr-42/extend"),
        json!({ "ttl": "90d" }),
    )
    .expect(422);

    // Data in it, then its time is up.
    mds.attach_postgres(&project, json!({ "type": "postgres" }));
    let url = mds.resolved_env(&project, "preview/pr-42")["DATABASE_URL_UNPOOLED"].clone();
    let (ok, _, err) = psql(
        &url,
        "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('preview row')",
    );
    assert!(ok, "{err}");
    let id = preview["id"].as_str().unwrap().to_string();
    query(
        &mds.superuser_config(),
        &format!(
            "UPDATE environments SET expires_at = now() - interval '1 second' WHERE id = '{id}'"
        ),
    );
    wait_until(Duration::from_secs(60), || {
        mds.get(&format!("{envs}/preview-pr-42")).status == 404
    })
    .expect("the expired preview is purged");
    let (ok, _, _) = psql(&url, "SELECT 1");
    assert!(!ok, "its database is gone");

    // Its data is in a restore point taken first, and the audit log says so.
    let points = query(
        &mds.superuser_config(),
        &format!("SELECT id, reason, state FROM restore_points WHERE environment_id = '{id}'"),
    );
    assert_eq!(points.len(), 1);
    let point: String = points[0].get(0);
    assert_eq!(points[0].get::<_, String>(1), "before-expiry");
    assert_eq!(points[0].get::<_, String>(2), "complete");
    let audit = mds
        .get("/api/v1/audit-events?action=environment.expire")
        .expect(200);
    let event = audit.data()["events"][0].clone();
    assert_eq!(event["actor_kind"], "system", "{event}");
    assert_eq!(event["outcome"], "ok", "{event}");
    assert_eq!(event["project_id"], project.as_str());
    assert!(
        event["detail"].as_str().unwrap().contains(&point),
        "{event}"
    );
    // Production, with no ttl, is untouched.
    mds.get(&format!("{envs}/production")).expect(200);
}
