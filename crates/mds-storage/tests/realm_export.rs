//! Auth realm export and import (the store side of a realm restore point),
//! on a real PostgreSQL.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::Cluster;
use mds_store::{
    NewBinding, NewDataService, NewEnvironment, NewProject, NewUser, RealmExport, Store,
    StoreError, UserKey, UserPatch,
};
use serde_json::json;

/// A project with environments `prod` and `staging` and an auth service
/// bound in both; returns the two binding ids.
async fn realm_bindings(store: &Store) -> (String, String) {
    let env = |id: &str, default: bool| NewEnvironment {
        id: id.to_string(),
        name: id.to_string(),
        slug: id.to_string(),
        kind: "development".to_string(),
        is_default: default,
        expires_at: None,
        data_copy: None,
    };
    store
        .create_project(
            &NewProject {
                id: "proj_1".to_string(),
                tenant_id: "tenant".to_string(),
                workspace_id: "ws".to_string(),
                slug: "app".to_string(),
                name: "app".to_string(),
                description: None,
                metadata: json!({}),
                attribution: json!({}),
                standalone: false,
                network_egress: "allow".to_string(),
            },
            &[env("prod", true), env("staging", false)],
        )
        .await
        .unwrap();
    let binding = |id: &str, env: &str| NewBinding {
        id: id.to_string(),
        environment_id: env.to_string(),
        resource_name: id.to_string(),
        sealed_password: vec![],
    };
    store
        .create_data_service(
            &NewDataService {
                id: "svc_auth".to_string(),
                project_id: "proj_1".to_string(),
                kind: "auth".to_string(),
                name: "Auth".to_string(),
                env_prefix: "AUTH".to_string(),
                environment_id: None,
                config: json!({}),
                standalone: false,
            },
            &[
                binding("bnd_prod", "prod"),
                binding("bnd_staging", "staging"),
            ],
        )
        .await
        .unwrap();
    ("bnd_prod".to_string(), "bnd_staging".to_string())
}

async fn add_user(store: &Store, binding: &str, id: &str, email: &str) {
    store
        .create_user(&NewUser {
            id,
            binding_id: binding,
            email,
            password_hash: &format!("$argon2id$hash-of-{id}"),
            user_metadata: &json!({ "name": id }),
            confirmed: true,
        })
        .await
        .unwrap();
}

async fn export(store: &Store, binding: &str) -> RealmExport {
    store.export_realm(binding).await.unwrap().unwrap()
}

#[tokio::test]
async fn an_import_restores_users_and_keys_exactly_and_ends_every_session() {
    let c = Cluster::start().await;
    let store = &c.store;
    let (prod, staging) = realm_bindings(store).await;

    add_user(store, &prod, "usr_1", "one@example.com").await;
    add_user(store, &prod, "usr_2", "two@example.com").await;
    add_user(store, &prod, "usr_3", "three@example.com").await;
    let jwk = |kid: &str| json!({ "kty": "EC", "kid": kid });
    store
        .add_signing_key(&prod, "kid_a", "active", b"sealed a", &jwk("kid_a"))
        .await
        .unwrap();
    store
        .add_signing_key(&prod, "kid_b", "standby", b"sealed b", &jwk("kid_b"))
        .await
        .unwrap();
    store
        .add_signing_key(&staging, "kid_s", "active", b"sealed s", &jwk("kid_s"))
        .await
        .unwrap();
    store
        .create_session("ses_1", &prod, "usr_1", b"refresh 1")
        .await
        .unwrap();

    let saved = export(store, &prod).await;
    assert_eq!(saved.users.len(), 3);
    assert_eq!(saved.signing_keys.len(), 2);
    assert!(
        saved.users[0].last_sign_in_at.is_some(),
        "the session signed in"
    );
    let json = serde_json::to_string(&saved).unwrap();
    assert!(
        json.contains(&hex::encode(b"sealed a")),
        "sealed keys as hex"
    );
    assert_eq!(serde_json::from_str::<RealmExport>(&json).unwrap(), saved);

    // Then: a user deleted, one changed, one added, keys rotated, more
    // sessions and a one-time token.
    store.delete_auth_user(&prod, "usr_3").await.unwrap();
    store
        .update_auth_user(
            &prod,
            "usr_2",
            &UserPatch {
                email: Some("new-two@example.com"),
                password_hash: Some("$argon2id$other"),
                ..UserPatch::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    add_user(store, &prod, "usr_4", "four@example.com").await;
    store
        .rotate_signing_keys(&prod, "kid_c", b"sealed c", &jwk("kid_c"))
        .await
        .unwrap();
    store
        .create_session("ses_2", &prod, "usr_4", b"refresh 2")
        .await
        .unwrap();
    store
        .create_one_time_token("usr_2", "recovery", b"one time", 3600.0)
        .await
        .unwrap();

    let report = store
        .import_realm(&prod, &saved, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.users, 3);
    assert_eq!(report.sessions_ended, 2);
    assert_eq!(
        report.tokens_ended, 3,
        "two refresh tokens, one one-time token"
    );
    assert_eq!(report.keys, 2);
    assert!(report.renamed.is_empty());
    let now = export(store, &prod).await;
    assert_eq!(now.users, saved.users, "same ids, hashes, metadata, times");
    assert_eq!(now.signing_keys, saved.signing_keys);
    assert!(store
        .session_user(&prod, "ses_1", "usr_1")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .auth_user(&prod, UserKey::Id("usr_4"))
        .await
        .unwrap()
        .is_none());

    // Into another binding, keeping its keys: user ids are global, so
    // those prod holds are renamed; emails and hashes are the export's.
    let report = store
        .import_realm(&staging, &saved, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.users, report.keys), (3, 0));
    assert_eq!(report.renamed.len(), 3);
    let copy = export(store, &staging).await;
    assert_eq!(copy.signing_keys.len(), 1);
    assert_eq!(copy.signing_keys[0].kid, "kid_s");
    for user in &saved.users {
        let (_, new_id) = report
            .renamed
            .iter()
            .find(|(old, _)| *old == user.id)
            .unwrap();
        let got = copy.users.iter().find(|u| u.id == *new_id).unwrap();
        assert_eq!(got.email, user.email);
        assert_eq!(got.password_hash, user.password_hash);
        assert_eq!(got.user_metadata, user.user_metadata);
        assert_eq!(got.created_at, user.created_at);
    }

    // The export's keys into another binding while prod still holds those
    // kids: refused, nothing changed.
    let err = store
        .import_realm(&staging, &saved, false)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(export(store, &staging).await.users, copy.users);

    // An id nobody holds any more is kept: prod's users gone, the export
    // restores them under their own ids elsewhere.
    for user in &saved.users {
        store.delete_auth_user(&prod, &user.id).await.unwrap();
    }
    let report = store
        .import_realm(&staging, &saved, true)
        .await
        .unwrap()
        .unwrap();
    assert!(report.renamed.is_empty());
    assert_eq!(export(store, &staging).await.users, saved.users);

    assert!(store.export_realm("bnd_nope").await.unwrap().is_none());
    assert!(store
        .import_realm("bnd_nope", &saved, true)
        .await
        .unwrap()
        .is_none());
    c.stop().await;
}
