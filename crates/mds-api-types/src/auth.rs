//! Wire types of auth: the end-user API at `AUTH_URL` in its dialects
//! (GoTrue's flat bodies, the MIOSA SDK's `{"data": ...}` ones) and the
//! admin API under `/projects/{p}/auth` and `/project-auth/*`.
//!
//! Timestamps keep the precision each dialect has always had: GoTrue's
//! users carry microseconds, the admin views and the SDK's `expires_at`
//! whole seconds. GoTrue's `expires_at` is epoch seconds, as GoTrue sends it.
//!
//! Fields stand in the order of their wire names: the bodies were once
//! sorted maps, and clients that compare bytes keep seeing the same ones.
//! (The two flattened bodies, [`GoTrueUnconfirmed`] and [`AuthStatus`],
//! are the exceptions: same names and values, another order.)

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Binding, ErrorBody, Timestamp};

/// How a user signed up: always by email here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppMetadata {
    pub provider: String,
    pub providers: Vec<String>,
}

impl AppMetadata {
    pub fn email() -> Self {
        Self {
            provider: "email".to_string(),
            providers: vec!["email".to_string()],
        }
    }
}

/// A user as GoTrue presents one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthUser {
    pub app_metadata: AppMetadata,
    pub aud: String,
    pub confirmation_sent_at: Option<Micros>,
    pub confirmed_at: Option<Micros>,
    pub created_at: Micros,
    pub email: String,
    pub email_confirmed_at: Option<Micros>,
    pub id: String,
    pub identities: Vec<Value>,
    pub is_anonymous: bool,
    pub last_sign_in_at: Option<Micros>,
    pub phone: String,
    pub recovery_sent_at: Option<Micros>,
    pub role: String,
    pub updated_at: Micros,
    pub user_metadata: Value,
}

/// GoTrue's session, with the names the MIOSA docs use (`token`,
/// `user_id`) alongside.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoTrueSession {
    pub access_token: String,
    /// Epoch seconds.
    pub expires_at: i64,
    pub expires_in: u32,
    pub refresh_token: String,
    pub token: String,
    /// `bearer`
    pub token_type: String,
    pub user: AuthUser,
    pub user_id: String,
}

/// GoTrue's answer to a signup that must confirm its email first: the
/// user, flat, and no session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoTrueUnconfirmed {
    #[serde(flatten)]
    pub user: AuthUser,
    pub user_id: String,
    pub confirmation_required: bool,
}

/// The MIOSA SDK's session (under `data`): camelCase twins for its
/// JavaScript callers, `expires_at` as a timestamp.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SdkSession {
    pub access_token: String,
    #[serde(rename = "expiresAt")]
    pub expires_at_camel: Option<Secs>,
    pub expires_at: Option<Secs>,
    /// Absent from `me`, which opens no session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub token: String,
    /// `Bearer`
    pub token_type: String,
    pub user: AuthUser,
    #[serde(rename = "userId")]
    pub user_id_camel: String,
    pub user_id: String,
}

/// The MIOSA SDK's answer to a signup that must confirm its email first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SdkUnconfirmed {
    pub confirmation_required: bool,
    pub user: AuthUser,
    #[serde(rename = "userId")]
    pub user_id_camel: String,
    pub user_id: String,
}

/// `{"ok": true}`: done, nothing to show (and, for a reset, nothing
/// revealed about whether the address has an account).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Done {
    pub ok: bool,
}

/// `{}`: GoTrue's answer to a recovery request.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Empty {}

/// GoTrue's `GET /settings`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthSettings {
    pub disable_signup: bool,
    pub external: ExternalProviders,
    pub jwt_algorithm: String,
    pub jwt_expiry: u32,
    pub mailer_autoconfirm: bool,
    pub password_min_length: u32,
    pub phone_autoconfirm: bool,
    pub saml_enabled: bool,
    pub sms_provider: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ExternalProviders {
    pub email: bool,
    pub phone: bool,
}

/// GoTrue's `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthHealth {
    pub description: String,
    pub name: String,
    pub version: String,
}

/// `/.well-known/jwks.json`: the public keys, as JWKs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Value>,
}

/// An end-user API error in both vocabularies: GoTrue's (`code` is the
/// HTTP status, `error_code`, `msg`, `weak_password`) and MIOSA's envelope
/// under `error`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuthErrorBody {
    pub code: u16,
    pub error: ErrorBody,
    pub error_code: String,
    pub message: String,
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weak_password: Option<WeakPassword>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WeakPassword {
    pub reasons: Vec<String>,
}

// ---------------------------------------------------------------- admin

/// Whether auth is on in one environment, its settings and `AUTH_URL`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthStatus {
    pub enabled: bool,
    /// `disabled`, `unbound`, or the binding's state.
    pub state: String,
    pub project_id: String,
    pub environment: String,
    pub database_id: Option<String>,
    pub config: Map<String, Value>,
    /// Absent while the project has never had auth.
    #[serde(flatten)]
    pub service: Option<AuthServiceStatus>,
}

/// The parts of [`AuthStatus`] that exist once auth was attached.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthServiceStatus {
    pub service_id: String,
    pub environment_id: String,
    pub auth_url: Option<String>,
    pub jwks_url: Option<String>,
    pub bindings: Vec<Binding>,
    pub warnings: Vec<String>,
}

/// An end user as the admin API lists one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppUser {
    pub created_at: Secs,
    pub email: String,
    pub email_confirmed_at: Option<Secs>,
    pub id: String,
    pub last_sign_in_at: Option<Secs>,
    pub role: String,
    pub updated_at: Secs,
    pub user_metadata: Value,
}

/// A message the mail sink captured, or a record of one sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthMail {
    pub body: String,
    pub created_at: Secs,
    /// `captured`, `sent`, `failed: ...` or `undeliverable: ...`.
    pub delivery: String,
    pub id: i64,
    pub subject: String,
    pub to: String,
}

/// The signing keys after a rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKeys {
    pub keys: Vec<SigningKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    pub retired_at: Option<Secs>,
    /// `standby`, `active` or `retired`.
    pub state: String,
}

/// A timestamp sent with microseconds, as GoTrue sends its users'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Micros(pub Timestamp);

/// A timestamp sent in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secs(pub Timestamp);

/// RFC 3339 at the type's fixed precision; any RFC 3339 is read.
macro_rules! fixed_precision {
    ($name:ident, $format:expr) => {
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0.to_rfc3339_opts($format, true))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Timestamp::deserialize(d).map(Self)
            }
        }
    };
}

fixed_precision!(Micros, chrono::SecondsFormat::Micros);
fixed_precision!(Secs, chrono::SecondsFormat::Secs);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn timestamps_keep_each_dialects_precision() {
        let t = chrono::Utc
            .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
            .single()
            .expect("a valid date");
        let key = SigningKey {
            kid: "k".into(),
            state: "retired".into(),
            retired_at: Some(Secs(t)),
        };
        assert_eq!(
            serde_json::to_value(&key).expect("serializes")["retired_at"],
            json!("2026-01-02T03:04:05Z")
        );
        let back: SigningKey =
            serde_json::from_value(json!({"kid": "k", "state": "active", "retired_at": null}))
                .expect("deserializes");
        assert!(back.retired_at.is_none());
    }

    #[test]
    fn status_without_a_service_has_no_service_fields() {
        let status = AuthStatus {
            enabled: false,
            state: "disabled".into(),
            project_id: "prj_1".into(),
            environment: "production".into(),
            database_id: None,
            config: Map::new(),
            service: None,
        };
        let value = serde_json::to_value(&status).expect("serializes");
        assert!(value.get("auth_url").is_none(), "{value}");
        assert_eq!(value["database_id"], Value::Null);
        let back: AuthStatus = serde_json::from_value(value).expect("deserializes");
        assert!(back.service.is_none());
    }
}
