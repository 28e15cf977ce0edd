//! Scheduled credential rotation (`mds credentials schedule`), through the
//! real binary, its CLI and psql: the schedule's bounds, and a rotation
//! once the credentials are older than it, with the replaced ones working
//! for the grace period. The clock is moved the only honest way a test
//! can: the stored age of the credentials is set in the past.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{psql, query, wait_until, Mds};
use serde_json::json;

#[test]
fn a_scheduled_rotation_replaces_credentials_that_are_too_old() {
    let mds = Mds::start_with(&["--expiry-check", "1s"], &[]);
    let project = mds
        .post("/api/v1/projects", json!({ "name": "sched" }))
        .expect(201)
        .data()["id"]
        .as_str()
        .unwrap()
        .to_string();
    mds.attach_postgres(&project, json!({ "type": "postgres" }));
    let schedule =
        format!("/api/v1/projects/{project}/environments/production/credentials/schedule");
    for (body, field) in [
        (json!({ "rotate_every": "30m" }), "rotate_every"),
        (json!({ "rotate_every": "400d" }), "rotate_every"),
        (json!({ "rotate_every": "2h", "grace": "3h" }), "grace"),
    ] {
        let refused = mds.put(&schedule, body.clone()).expect(422);
        assert_eq!(refused.body["error"]["details"]["field"], field, "{body}");
    }

    let (ok, out, err) = mds.cli(&[
        "credentials",
        "schedule",
        "-p",
        &project,
        "--rotate-every",
        "90d",
        "--grace",
        "1h",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("rotate once they are 90d 0h old"), "{out}");
    let env = mds
        .get(&format!(
            "/api/v1/projects/{project}/environments/production"
        ))
        .expect(200);
    assert_eq!(env.data()["rotate_every_secs"], 90 * 86400);
    assert_eq!(env.data()["rotate_grace_secs"], 3600);

    // Young credentials are left alone; 91 days old, they are rotated.
    let before = mds.resolved_env(&project, "production")["DATABASE_URL"].clone();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        mds.resolved_env(&project, "production")["DATABASE_URL"],
        before
    );
    query(
        &mds.superuser_config(),
        &format!(
            "UPDATE bindings b SET created_at = now() - interval '91 days'
             FROM data_services s WHERE s.id = b.service_id AND s.project_id = '{project}'"
        ),
    );
    let after = std::cell::RefCell::new(String::new());
    wait_until(Duration::from_secs(30), || {
        let now = mds.resolved_env(&project, "production")["DATABASE_URL"].clone();
        *after.borrow_mut() = now.clone();
        now != before
    })
    .expect("the credentials were not rotated");
    let after = after.into_inner();
    assert!(after.contains("_r1:"), "{after}");
    // Both work during the grace period; the audit log says who did it.
    for url in [&before, &after] {
        let (ok, out, err) = psql(url, "SELECT 1");
        assert!(ok, "{url}: {out}{err}");
    }
    // (The log is written by a task of its own: it is polled.)
    wait_until(Duration::from_secs(10), || {
        let events = mds
            .get(&format!(
                "/api/v1/audit-events?project={project}&action=credentials.rotate"
            ))
            .expect(200);
        events.data()["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor_kind"] == "system" && e["outcome"] == "ok")
    })
    .expect("no audit event of the scheduled rotation");
    // Off: no more scheduled rotations.
    let (ok, out, err) = mds.cli(&["credentials", "schedule", "-p", &project, "--off"]);
    assert!(ok && out.contains("no scheduled rotation"), "{out}{err}");
}
