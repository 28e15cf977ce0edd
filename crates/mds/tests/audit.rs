//! The audit log's chain, attacked where it is kept: rows edited, removed
//! and trimmed directly in the control database, checked with the real
//! CLI (`mds audit verify`). Who is recorded, and reading, are driven by
//! the SDK in tests/sdk/test_audit.py.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{block_on, wait_until, Mds};
use serde_json::json;

/// Runs `sql` as the control database's superuser; its error's message.
fn try_sql(mds: &Mds, sql: &str) -> Result<(), String> {
    let config = mds.superuser_config();
    block_on(async {
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
        let task = tokio::spawn(conn);
        let done = client.batch_execute(sql).await.map_err(|e| {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |db| db.message().to_string())
        });
        drop(client);
        let _ = task.await;
        done
    })
}

fn verify(mds: &Mds) -> (bool, String) {
    let (ok, out, err) = mds.cli(&["audit", "verify"]);
    (ok, format!("{out}{err}"))
}

/// A few changes, hence events 1 to 4 at least.
fn make_events(mds: &Mds) {
    for i in 0..3 {
        mds.post(
            "/api/v1/projects",
            json!({ "name": format!("audited-{i}") }),
        )
        .expect(201);
    }
    mds.post("/api/v1/projects", json!({ "name": "" }))
        .expect(422);
}

#[test]
fn an_edited_or_removed_row_breaks_the_chain_where_it_was_touched() {
    let mds = Mds::start();
    make_events(&mds);
    let (ok, said) = verify(&mds);
    assert!(ok, "{said}");
    assert!(
        said.contains("The audit chain holds: 4 events, 1 to 4"),
        "{said}"
    );

    // Append-only: the table refuses an edit, even the superuser's...
    let refused = try_sql(
        &mds,
        "UPDATE audit_events SET detail = 'nothing' WHERE seq = 2",
    );
    assert_eq!(refused, Err("audit events are append-only".to_string()));
    assert!(try_sql(&mds, "DELETE FROM audit_events WHERE seq = 2").is_err());
    // ...until the triggers are switched off: then the chain tells.
    let edit = "SET session_replication_role = replica;
                UPDATE audit_events SET outcome = 'ok' WHERE seq = 4;";
    try_sql(&mds, edit).unwrap();
    let (ok, said) = verify(&mds);
    assert!(!ok, "{said}");
    assert!(
        said.contains("broken at event 4: event 4 was changed after it was written"),
        "{said}"
    );
    try_sql(
        &mds,
        "SET session_replication_role = replica;
         UPDATE audit_events SET outcome = 'refused' WHERE seq = 4;",
    )
    .unwrap();
    assert!(verify(&mds).0);

    // A row removed from the middle, or rewritten with a hash of its own.
    try_sql(
        &mds,
        "SET session_replication_role = replica; DELETE FROM audit_events WHERE seq = 2;",
    )
    .unwrap();
    let (ok, said) = verify(&mds);
    assert!(
        !ok && said.contains("events 2 to 2 are missing before event 3"),
        "{said}"
    );
}

#[test]
fn a_forged_link_is_caught_and_a_trim_leaves_a_chain_that_verifies() {
    let mds = Mds::start();
    make_events(&mds);
    // Events are written just after their answers: verify waits for them.
    assert!(verify(&mds).0);
    // Whoever writes the database cannot make a link: the key is derived
    // from the master key. A recomputed plain SHA-256 is refused.
    try_sql(
        &mds,
        "SET session_replication_role = replica;
         UPDATE audit_events SET detail = 'forged', hash = sha256(prev_hash || 'forged'::bytea)
         WHERE seq = 4;",
    )
    .unwrap();
    let (ok, said) = verify(&mds);
    assert!(!ok && said.contains("event 4 was changed"), "{said}");
    try_sql(
        &mds,
        "SET session_replication_role = replica; DELETE FROM audit_events WHERE seq = 4;",
    )
    .unwrap();
    assert!(verify(&mds).0, "the chain up to 3 holds");

    // Retention trims the old end at start; what remains verifies from
    // the anchor, and new events link on.
    let root = mds.root.clone();
    let mut mds = mds;
    mds.stop();
    std::thread::sleep(Duration::from_secs(2));
    let mds = Mds::start_in(&root, &["--audit-retention", "1s"], &[])
        .unwrap_or_else(|log| panic!("{log}"));
    // The trim runs at start, beside the API.
    let trim_events = || {
        mds.get("/api/v1/audit-events?action=audit.trim")
            .expect(200)
            .data()["events"]
            .as_array()
            .unwrap()
            .clone()
    };
    wait_until(Duration::from_secs(10), || !trim_events().is_empty()).expect("a trim at start");
    make_events(&mds);
    let (ok, said) = verify(&mds);
    assert!(ok, "{said}");
    assert!(said.contains("(trimmed up to event 2)"), "{said}");
    let events = trim_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["actor_kind"], "system");
    assert!(events[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("2 events older than"));
    // The anchor moved past a removed start: taking one more from the
    // front is a gap.
    try_sql(
        &mds,
        "SET session_replication_role = replica;
         DELETE FROM audit_events WHERE seq = (SELECT min(seq) FROM audit_events);",
    )
    .unwrap();
    let (ok, said) = verify(&mds);
    assert!(!ok && said.contains("missing"), "{said}");
}
