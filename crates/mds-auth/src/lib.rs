//! End-user auth for apps: the rules that do not touch HTTP or the
//! database. Passwords (argon2id on a bounded pool), tokens (HS256/ES256
//! JWTs, JWKS), email normalisation, the password policy, a project's auth
//! settings, and mail delivery.

pub mod jwt;
pub mod mail;
pub mod password;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A project's auth settings, kept in its auth service's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Off: the end-user API answers 404 and nothing is injected; users
    /// are kept.
    pub enabled: bool,
    pub allow_signups: bool,
    pub email_confirm_required: bool,
    pub token_expiry_sec: u32,
    pub providers: Vec<String>,
    pub password_min_length: u32,
    /// `none`, `letters_digits`, `lower_upper_letters_digits` or
    /// `lower_upper_letters_digits_symbols`.
    pub password_requirements: String,
    /// `HS256` (AUTH_JWT_SECRET) or `ES256` (AUTH_JWKS_URL).
    pub signing_algorithm: String,
    /// Login attempts per minute from one address, and against one account.
    pub login_rate_per_ip: u32,
    pub login_rate_per_account: u32,
    /// Where links in confirmation and recovery mail lead, if not to
    /// `AUTH_URL/verify`; also the only origin `redirect_to` may name.
    pub site_url: Option<String>,
    /// Seconds between two recovery mails to one address.
    pub mail_min_interval_sec: u32,
    /// Seconds a spent refresh token may be spent again (concurrent tabs,
    /// retries) before reuse counts as theft.
    pub refresh_reuse_interval_sec: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_signups: true,
            email_confirm_required: false,
            token_expiry_sec: 3600,
            providers: vec!["email".to_string()],
            password_min_length: 8,
            password_requirements: "none".to_string(),
            signing_algorithm: "HS256".to_string(),
            login_rate_per_ip: 60,
            login_rate_per_account: 10,
            site_url: None,
            mail_min_interval_sec: 60,
            refresh_reuse_interval_sec: 10,
        }
    }
}

/// A setting that was refused, naming its field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

fn refuse(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        message: message.into(),
    }
}

const REQUIREMENTS: &[&str] = &[
    "none",
    "letters_digits",
    "lower_upper_letters_digits",
    "lower_upper_letters_digits_symbols",
];

impl AuthConfig {
    /// The settings stored in a service's config (unknown keys ignored).
    pub fn from_stored(config: &Value) -> Self {
        serde_json::from_value(config.clone()).unwrap_or_default()
    }

    pub fn to_stored(&self) -> Value {
        serde_json::to_value(self).expect("plain fields")
    }

    /// Applies the keys of `patch` that name settings, under the names the
    /// MIOSA SDK, its docs and GoTrue use; each bad value names its field.
    pub fn apply(&mut self, patch: &Map<String, Value>) -> Result<(), ConfigError> {
        for (key, value) in patch {
            if value.is_null() {
                continue;
            }
            let bool_of = |v: &Value| v.as_bool().ok_or_else(|| refuse(key, "must be a boolean"));
            let uint_of = |v: &Value, min: u64, max: u64| {
                v.as_u64()
                    .filter(|n| (min..=max).contains(n))
                    .map(|n| n as u32)
                    .ok_or_else(|| refuse(key, format!("must be an integer from {min} to {max}")))
            };
            match key.as_str() {
                "enabled" => self.enabled = bool_of(value)?,
                "allow_signups" | "signup_enabled" => self.allow_signups = bool_of(value)?,
                "disable_signup" => self.allow_signups = !bool_of(value)?,
                "email_confirm_required" | "mailer_autoconfirm" => {
                    let on = bool_of(value)?;
                    self.email_confirm_required =
                        if key == "mailer_autoconfirm" { !on } else { on };
                }
                "token_expiry_sec" | "jwt_exp" => {
                    self.token_expiry_sec = uint_of(value, 60, 7 * 24 * 3600)?
                }
                "providers" => {
                    let list = value
                        .as_array()
                        .ok_or_else(|| refuse(key, "must be a list such as [\"email\"]"))?;
                    let mut providers = Vec::new();
                    for p in list {
                        match p.as_str() {
                            Some("email") => providers.push("email".to_string()),
                            Some(other) => {
                                return Err(refuse(
                                    key,
                                    format!("provider {other:?} is not available; use \"email\""),
                                ))
                            }
                            None => return Err(refuse(key, "must be a list of strings")),
                        }
                    }
                    self.providers = providers;
                }
                "password_min_length" => self.password_min_length = uint_of(value, 6, 128)?,
                "password_requirements" => {
                    let v = value.as_str().unwrap_or_default();
                    if !REQUIREMENTS.contains(&v) {
                        return Err(refuse(
                            key,
                            format!("must be one of {}", REQUIREMENTS.join(", ")),
                        ));
                    }
                    self.password_requirements = v.to_string();
                }
                "signing_algorithm" | "jwt_algorithm" => {
                    let v = value.as_str().unwrap_or_default().to_ascii_uppercase();
                    if v != "HS256" && v != "ES256" {
                        return Err(refuse(key, "must be HS256 or ES256"));
                    }
                    self.signing_algorithm = v;
                }
                "login_rate_per_ip" => self.login_rate_per_ip = uint_of(value, 1, 1_000_000)?,
                "login_rate_per_account" => {
                    self.login_rate_per_account = uint_of(value, 1, 1_000_000)?
                }
                "refresh_reuse_interval_sec" => {
                    self.refresh_reuse_interval_sec = uint_of(value, 0, 60)?
                }
                "mail_min_interval_sec" => {
                    self.mail_min_interval_sec = uint_of(value, 0, 24 * 3600)?
                }
                "site_url" => {
                    let v = value.as_str().unwrap_or_default();
                    if !(v.starts_with("http://") || v.starts_with("https://")) {
                        return Err(refuse(key, "must be an http(s) URL"));
                    }
                    self.site_url = Some(v.trim_end_matches('/').to_string());
                }
                // Identifiers and unknown keys travel alongside settings.
                _ => {}
            }
        }
        Ok(())
    }

    /// Why `password` is refused, GoTrue's reasons (`length`,
    /// `characters`); empty when it is acceptable.
    pub fn password_problems(&self, password: &str) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        let length = password.chars().count();
        if length < self.password_min_length as usize || password.len() > MAX_PASSWORD_BYTES {
            reasons.push("length");
        }
        let has = |f: fn(char) -> bool| password.chars().any(f);
        let letters = has(char::is_alphabetic);
        let digits = has(|c| c.is_ascii_digit());
        let lower = has(char::is_lowercase);
        let upper = has(char::is_uppercase);
        let symbols = has(|c| !c.is_alphanumeric() && !c.is_whitespace());
        let ok = match self.password_requirements.as_str() {
            "letters_digits" => letters && digits,
            "lower_upper_letters_digits" => lower && upper && digits,
            "lower_upper_letters_digits_symbols" => lower && upper && digits && symbols,
            _ => true,
        };
        if !ok {
            reasons.push("characters");
        }
        reasons
    }

    /// The policy in words, for error messages.
    pub fn password_rule(&self) -> String {
        let chars = match self.password_requirements.as_str() {
            "letters_digits" => ", with letters and digits",
            "lower_upper_letters_digits" => ", with lower and upper case letters and digits",
            "lower_upper_letters_digits_symbols" => {
                ", with lower and upper case letters, digits and symbols"
            }
            _ => "",
        };
        format!(
            "a password needs at least {} characters{chars}",
            self.password_min_length
        )
    }
}

/// An opaque token (refresh, confirmation, recovery): 256 random bits,
/// URL-safe.
pub fn random_token() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Longer passwords are refused: hashing cost should not be the caller's
/// to choose.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// An email address in the form it is stored and compared: trimmed and in
/// lower case. Refuses what cannot be an address (one `@`, a dotted
/// domain of letters, digits and hyphens, no spaces or control characters).
pub fn normalize_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("an email address is required");
    }
    if email.len() > 254 {
        return Err("an email address has at most 254 characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("an email address needs an @");
    };
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return Err("the part before the @ must be 1 to 64 characters and the only @");
    }
    if local
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "\"(),:;<>[\\]".contains(c))
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return Err("the part before the @ has a character an address cannot have");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err("the domain must be a name such as example.com");
    }
    Ok(email)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emails_are_normalised_and_junk_is_refused() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        assert_eq!(
            normalize_email("a.b+tag@mail.example.co").unwrap(),
            "a.b+tag@mail.example.co"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a@b@c.com",
            "a b@c.com",
            "ada@exa_mple.com",
            "ada@-example.com",
            "ada@example..com",
            ".ada@example.com",
            "ad\u{0}a@example.com",
            "<a>@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn password_policy_and_settings_aliases() {
        let mut config = AuthConfig::default();
        assert_eq!(config.password_problems("short"), vec!["length"]);
        assert!(config.password_problems("long enough").is_empty());
        config
            .apply(
                json!({
                    "signup_enabled": false, "token_expiry_sec": 600,
                    "password_requirements": "letters_digits", "resource_id": "x"
                })
                .as_object()
                .unwrap(),
            )
            .unwrap();
        assert!(!config.allow_signups);
        assert_eq!(config.token_expiry_sec, 600);
        assert_eq!(config.password_problems("lettersonly"), vec!["characters"]);
        assert!(config.password_problems("letters4ndigits").is_empty());
        let err = config
            .apply(json!({ "token_expiry_sec": 5 }).as_object().unwrap())
            .unwrap_err();
        assert_eq!(err.field, "token_expiry_sec");
        let err = config
            .apply(json!({ "providers": ["github"] }).as_object().unwrap())
            .unwrap_err();
        assert_eq!(err.field, "providers");
        assert_eq!(AuthConfig::from_stored(&config.to_stored()), config);
    }
}
