//! Wire types of auth: the end-user API at `AUTH_URL` in its dialects
//! (GoTrue's flat bodies, the MIOSA SDK's `{"data": ...}` ones) and the
//! admin API under `/projects/{p}/auth` and `/project-auth/*`.
//!
//! Timestamps keep the precision each dialect has always had: GoTrue's
//! users carry microseconds, the admin views and the SDK's `expires_at`
//! whole seconds. GoTrue's `expires_at` is epoch seconds, as GoTrue sends it.

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
    pub id: String,
    pub aud: String,
    pub role: String,
    pub email: String,
    pub phone: String,
    #[serde(with = "micros")]
    pub email_confirmed_at: Option<Timestamp>,
    #[serde(with = "micros")]
    pub confirmed_at: Option<Timestamp>,
    #[serde(with = "micros")]
    pub confirmation_sent_at: Option<Timestamp>,
    #[serde(with = "micros")]
    pub recovery_sent_at: Option<Timestamp>,
    #[serde(with = "micros")]
    pub last_sign_in_at: Option<Timestamp>,
    pub app_metadata: AppMetadata,
    pub user_metadata: Value,
    pub identities: Vec<Value>,
    pub is_anonymous: bool,
    #[serde(with = "micros")]
    pub created_at: Option<Timestamp>,
    #[serde(with = "micros")]
    pub updated_at: Option<Timestamp>,
}

/// GoTrue's session, with the names the MIOSA docs use (`token`,
/// `user_id`) alongside.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoTrueSession {
    pub access_token: String,
    pub token: String,
    /// `bearer`
    pub token_type: String,
    pub expires_in: u32,
    /// Epoch seconds.
    pub expires_at: i64,
    pub refresh_token: String,
    pub user_id: String,
    pub user: AuthUser,
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
    pub user_id: String,
    #[serde(rename = "userId")]
    pub user_id_camel: String,
    pub token: String,
    pub access_token: String,
    /// `Bearer`
    pub token_type: String,
    #[serde(with = "secs")]
    pub expires_at: Option<Timestamp>,
    #[serde(rename = "expiresAt", with = "secs")]
    pub expires_at_camel: Option<Timestamp>,
    pub user: AuthUser,
    /// Absent from `me`, which opens no session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// The MIOSA SDK's answer to a signup that must confirm its email first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SdkUnconfirmed {
    pub user_id: String,
    #[serde(rename = "userId")]
    pub user_id_camel: String,
    pub confirmation_required: bool,
    pub user: AuthUser,
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
    pub external: ExternalProviders,
    pub disable_signup: bool,
    pub mailer_autoconfirm: bool,
    pub phone_autoconfirm: bool,
    pub sms_provider: String,
    pub saml_enabled: bool,
    pub password_min_length: u32,
    pub jwt_algorithm: String,
    pub jwt_expiry: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ExternalProviders {
    pub email: bool,
    pub phone: bool,
}

/// GoTrue's `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthHealth {
    pub name: String,
    pub version: String,
    pub description: String,
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
    pub error_code: String,
    pub msg: String,
    pub message: String,
    pub error: ErrorBody,
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
    pub id: String,
    pub email: String,
    pub role: String,
    #[serde(with = "secs")]
    pub email_confirmed_at: Option<Timestamp>,
    #[serde(with = "secs")]
    pub last_sign_in_at: Option<Timestamp>,
    pub user_metadata: Value,
    #[serde(with = "secs")]
    pub created_at: Option<Timestamp>,
    #[serde(with = "secs")]
    pub updated_at: Option<Timestamp>,
}

/// A message the mail sink captured, or a record of one sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthMail {
    pub id: i64,
    pub to: String,
    pub subject: String,
    pub body: String,
    /// `captured`, `sent`, `failed: ...` or `undeliverable: ...`.
    pub delivery: String,
    #[serde(with = "secs")]
    pub created_at: Option<Timestamp>,
}

/// The signing keys after a rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKeys {
    pub keys: Vec<SigningKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// `standby`, `active` or `retired`.
    pub state: String,
    #[serde(with = "secs")]
    pub retired_at: Option<Timestamp>,
}

/// RFC 3339 at a fixed precision, `null` for none.
macro_rules! fixed_precision {
    ($name:ident, $format:expr) => {
        mod $name {
            use chrono::{DateTime, SecondsFormat, Utc};
            use serde::{Deserialize, Deserializer, Serializer};

            pub fn serialize<S: Serializer>(
                t: &Option<DateTime<Utc>>,
                s: S,
            ) -> Result<S::Ok, S::Error> {
                match t {
                    Some(t) => s.serialize_str(&t.to_rfc3339_opts($format, true)),
                    None => s.serialize_none(),
                }
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(
                d: D,
            ) -> Result<Option<DateTime<Utc>>, D::Error> {
                Option::<DateTime<Utc>>::deserialize(d)
            }
        }
    };
}

fixed_precision!(micros, SecondsFormat::Micros);
fixed_precision!(secs, SecondsFormat::Secs);

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
            retired_at: Some(t),
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
