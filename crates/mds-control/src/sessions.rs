//! End-user sessions of a [`Realm`]: sign-up, password login under rate
//! limits, refresh with reuse detection, logout scopes, one-time tokens
//! (email confirmation, recovery) and user updates.
//!
//! Every wire dialect of the end-user API (GoTrue, the MIOSA docs, the
//! MIOSA SDK) calls these; refusals are [`AuthRefusal`]s, which the server
//! words in each dialect's shape.
//!
//! Secrets at rest: refresh and one-time tokens are stored as digests,
//! passwords as argon2id hashes; only the sink of a non-production
//! environment keeps a live token, in the mail it captured.

use chrono::Utc;
use mds_core::ids::IdKind;
use mds_store::{LogoutScope, NewUser, Refresh, StoreError, UserKey, UserPatch, UserRow};
use serde_json::{json, Value};

use crate::realms::Realm;
use crate::{AuthRefusal, Control, ControlError, ControlResult};

/// One-time email tokens (confirmation, recovery) live this long.
const ONE_TIME_TOKEN_SECS: f64 = 24.0 * 3600.0;

/// Largest `user_metadata`: it travels in every access token.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// What a caller sends about a user; each operation reads what it needs.
#[derive(Debug, Default, Clone)]
pub struct UserInput {
    pub email: Option<String>,
    pub password: Option<String>,
    /// `user_metadata`: an object, or null for none.
    pub data: Option<Value>,
}

/// A session just opened or refreshed.
#[derive(Debug)]
pub struct Issued {
    pub user: UserRow,
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u32,
    /// Epoch seconds.
    pub expires_at: i64,
}

pub enum SignedUp {
    Session(Issued),
    /// Email confirmation is required: no session until then.
    Unconfirmed(UserRow),
}

/// The holder of a valid access token whose session is live.
pub struct Bearer {
    pub user: UserRow,
    pub session_id: String,
    /// The token's `exp`, epoch seconds.
    pub expires_at: i64,
}

/// Which of a user's sessions a logout ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every session of the user.
    Global,
    /// The token's own session.
    Local,
    /// Every session but the token's.
    Others,
}

/// Why a one-time token was mailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Signup,
    Recovery,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Signup => "signup",
            Self::Recovery => "recovery",
        }
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    mds_crypto::digest_parts(&[b"auth-token", token.as_bytes()])
}

/// The hashing pool's queue is full: a 503 to retry, not a wait for all.
fn hashed<T>(result: Result<T, mds_auth::password::Busy>) -> ControlResult<T> {
    result.map_err(|busy| ControlError::unavailable(busy.to_string()))
}

fn email_of(input: &UserInput) -> ControlResult<String> {
    let raw = input
        .email
        .as_deref()
        .ok_or_else(|| AuthRefusal::invalid("email", "is required"))?;
    Ok(mds_auth::normalize_email(raw).map_err(|why| AuthRefusal::invalid("email", why))?)
}

fn password_of(input: &UserInput) -> ControlResult<String> {
    Ok(input
        .password
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| AuthRefusal::invalid("password", "is required"))?)
}

fn check_password(realm: &Realm, password: &str) -> ControlResult<()> {
    let reasons = realm.config.password_problems(password);
    if reasons.is_empty() {
        return Ok(());
    }
    Err(AuthRefusal::WeakPassword {
        rule: realm.config.password_rule(),
        reasons,
    }
    .into())
}

/// `data` from an input: an object, small, with no NUL (which Postgres's
/// jsonb cannot store).
fn metadata_of(input: &UserInput) -> ControlResult<Option<Value>> {
    match &input.data {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => {
            let text = v.to_string();
            if text.len() > MAX_METADATA_BYTES {
                return Err(AuthRefusal::invalid(
                    "data",
                    format!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
                )
                .into());
            }
            if text.contains("\\u0000") {
                return Err(AuthRefusal::invalid("data", "must not contain NUL characters").into());
            }
            Ok(Some(v.clone()))
        }
        Some(_) => Err(AuthRefusal::invalid("data", "must be an object").into()),
    }
}

/// Signs an access token for `user` in `session_id`; answers it and its
/// expiry.
fn access_token(realm: &Realm, user: &UserRow, session_id: &str) -> (String, i64) {
    let now = Utc::now().timestamp();
    let exp = now + i64::from(realm.config.token_expiry_sec);
    let claims = json!({
        "iss": realm.url,
        "aud": "authenticated",
        "sub": user.id,
        "email": user.email,
        "role": user.role,
        "iat": now,
        "exp": exp,
        "session_id": session_id,
        "aal": "aal1",
        "is_anonymous": false,
        "app_metadata": { "provider": "email", "providers": ["email"] },
        "user_metadata": user.user_metadata,
        "project_id": realm.project_id,
        "environment": realm.environment,
    });
    (realm.sign(&claims), exp)
}

fn issued(realm: &Realm, user: UserRow, session_id: &str, refresh_token: String) -> Issued {
    let (access_token, expires_at) = access_token(realm, &user, session_id);
    Issued {
        user,
        access_token,
        refresh_token,
        expires_in: realm.config.token_expiry_sec,
        expires_at,
    }
}

impl Control {
    async fn open_session(&self, realm: &Realm, user: UserRow) -> ControlResult<Issued> {
        let session_id = IdKind::Session.mint();
        let refresh_token = mds_auth::random_token();
        self.store()?
            .create_session(
                &session_id,
                &realm.binding_id,
                &user.id,
                &token_hash(&refresh_token),
            )
            .await?;
        Ok(issued(realm, user, &session_id, refresh_token))
    }

    /// Counts an attempt against each (kind, subject, limit); over any
    /// limit is a refusal that says when to come back.
    async fn rate_limit(&self, realm: &Realm, limits: &[(&str, &str, u32)]) -> ControlResult<()> {
        let keys: Vec<String> = limits
            .iter()
            .map(|(kind, subject, _)| format!("{kind}:{}:{subject}", realm.binding_id))
            .collect();
        let counts = self.store()?.hit_rate_windows(&keys).await?;
        for ((kind, _, limit), key) in limits.iter().zip(&keys) {
            let Some((_, hits, left)) = counts.iter().find(|(k, _, _)| k == key) else {
                continue;
            };
            if *hits > *limit as i32 {
                let what = if *kind == "login-account" {
                    "this account"
                } else {
                    "this address"
                };
                return Err(AuthRefusal::RateLimited {
                    what,
                    retry_in_secs: left.ceil() as u64,
                    retry_after: std::time::Duration::from_secs_f64(left.max(1.0)),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Counts an attempt against the client's address (under `kind`) and
    /// the account, then looks the account up (None when the email is
    /// unknown).
    async fn limited_user(
        &self,
        realm: &Realm,
        kind: &str,
        addr: &str,
        email: &str,
    ) -> ControlResult<Option<UserRow>> {
        self.rate_limit(
            realm,
            &[
                (kind, addr, realm.config.login_rate_per_ip),
                ("login-account", email, realm.config.login_rate_per_account),
            ],
        )
        .await?;
        Ok(self
            .store()?
            .auth_user(&realm.binding_id, UserKey::Email(email))
            .await?)
    }

    /// Signs a user up from `addr`: a session at once, or a confirmation
    /// mail first when the realm requires one.
    pub async fn sign_up(
        &self,
        realm: &Realm,
        addr: &str,
        input: &UserInput,
    ) -> ControlResult<SignedUp> {
        if !realm.config.allow_signups {
            return Err(AuthRefusal::SignupDisabled.into());
        }
        let email = email_of(input)?;
        let password = password_of(input)?;
        check_password(realm, &password)?;
        let metadata = metadata_of(input)?.unwrap_or_else(|| json!({}));
        let limit = [("signup-address", addr, realm.config.login_rate_per_ip)];
        self.rate_limit(realm, &limit).await?;
        let hash = hashed(self.auth.hasher.hash(password).await)?;
        let confirm = realm.config.email_confirm_required;
        let store = self.store()?;
        let new = NewUser {
            id: &IdKind::User.mint(),
            binding_id: &realm.binding_id,
            email: &email,
            password_hash: &hash,
            user_metadata: &metadata,
            confirmed: !confirm,
        };
        let user = match store.create_user(&new).await {
            Ok(user) => user,
            // Nobody proved they own an unconfirmed address: whoever signs
            // up with it now takes it over (and must confirm it).
            Err(StoreError::Conflict { .. }) if confirm => store
                .replace_unconfirmed_user(&realm.binding_id, &email, &hash, &metadata)
                .await?
                .ok_or(AuthRefusal::UserAlreadyExists)?,
            Err(StoreError::Conflict { .. }) => return Err(AuthRefusal::UserAlreadyExists.into()),
            Err(e) => return Err(e.into()),
        };
        tracing::info!(
            user = user.id,
            realm = realm.binding_id,
            "end user signed up"
        );
        if confirm {
            let user = self.send_token_mail(realm, user, Purpose::Signup).await?;
            return Ok(SignedUp::Unconfirmed(user));
        }
        Ok(SignedUp::Session(self.open_session(realm, user).await?))
    }

    /// Logs in with email and password, from `addr`.
    pub async fn password_login(
        &self,
        realm: &Realm,
        addr: &str,
        input: &UserInput,
    ) -> ControlResult<Issued> {
        let email = email_of(input)?;
        let password = password_of(input)?;
        let user = self
            .limited_user(realm, "login-address", addr, &email)
            .await?;
        // An unknown email is checked against a decoy hash: same time, no.
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let verified = hashed(self.auth.hasher.verify(password, hash).await)?;
        let user = match user {
            Some(user) if verified => user,
            _ => return Err(AuthRefusal::InvalidCredentials.into()),
        };
        if user.email_confirmed_at.is_none() {
            return Err(AuthRefusal::EmailNotConfirmed.into());
        }
        self.open_session(realm, user).await
    }

    /// Spends a refresh token for a new pair. A token spent once already
    /// (past the reuse interval) revokes its whole session: someone else
    /// may hold a copy.
    pub async fn refresh(&self, realm: &Realm, presented: Option<&str>) -> ControlResult<Issued> {
        let presented = presented
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthRefusal::invalid("refresh_token", "is required"))?;
        let next = mds_auth::random_token();
        let refreshed = self
            .store()?
            .refresh_session(
                &realm.binding_id,
                &token_hash(presented),
                &token_hash(&next),
                f64::from(realm.config.refresh_reuse_interval_sec),
            )
            .await?;
        match refreshed {
            Refresh::Rotated { session_id, user } => Ok(issued(realm, *user, &session_id, next)),
            Refresh::Reused => {
                tracing::warn!(
                    realm = realm.binding_id,
                    "a spent refresh token was presented; its session is revoked"
                );
                Err(AuthRefusal::RefreshTokenAlreadyUsed.into())
            }
            Refresh::Invalid => Err(AuthRefusal::RefreshTokenNotFound.into()),
        }
    }

    /// The holder of a valid access token whose session is live.
    pub async fn bearer(&self, realm: &Realm, token: &str) -> ControlResult<Bearer> {
        let claims = verified(realm, token)?;
        let (Some(sub), Some(session)) = (claims["sub"].as_str(), claims["session_id"].as_str())
        else {
            return Err(
                AuthRefusal::BadJwt("invalid JWT: it names no user or session".into()).into(),
            );
        };
        let user = self
            .store()?
            .session_user(&realm.binding_id, session, sub)
            .await?
            .ok_or(AuthRefusal::SessionNotFound)?;
        Ok(Bearer {
            user,
            session_id: session.to_string(),
            expires_at: claims["exp"].as_i64().unwrap_or_default(),
        })
    }

    /// Ends sessions of the token's user. Idempotent: a token whose
    /// session has already ended still gets its answer (only forgeries are
    /// refused).
    pub async fn logout(&self, realm: &Realm, token: &str, scope: Scope) -> ControlResult<()> {
        let claims = verified(realm, token)?;
        let user_id = claims["sub"].as_str().unwrap_or_default();
        let session = claims["session_id"].as_str().unwrap_or_default();
        let scope = match scope {
            Scope::Global => LogoutScope::Global,
            Scope::Local => LogoutScope::Local(session),
            Scope::Others => LogoutScope::Others(session),
        };
        self.store()?
            .revoke_sessions(&realm.binding_id, user_id, scope, "logout")
            .await?;
        Ok(())
    }

    /// Sends a recovery mail if the address has an account; the same
    /// either way to the caller, so the answer reveals nothing.
    pub async fn recover(&self, realm: &Realm, addr: &str, input: &UserInput) -> ControlResult<()> {
        let email = email_of(input)?;
        let user = self
            .limited_user(realm, "recover-address", addr, &email)
            .await?;
        // At most one recovery mail per interval to an address: no mail bombs.
        let interval = chrono::Duration::seconds(i64::from(realm.config.mail_min_interval_sec));
        if let Some(user) = user.filter(|u| {
            u.recovery_sent_at
                .is_none_or(|sent| Utc::now() - sent >= interval)
        }) {
            self.send_token_mail(realm, user, Purpose::Recovery).await?;
        }
        Ok(())
    }

    /// Spends a confirmation or recovery token: the email is confirmed and
    /// a session opens.
    pub async fn verify_token(&self, realm: &Realm, token: Option<&str>) -> ControlResult<Issued> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthRefusal::invalid("token", "is required"))?;
        let (user, _purpose) = self
            .store()?
            .consume_one_time_token(&realm.binding_id, &token_hash(token))
            .await?
            .ok_or(AuthRefusal::OtpExpired)?;
        self.open_session(realm, user).await
    }

    /// Changes the bearer's user; a new password ends the user's other
    /// sessions (whoever else held one is out), a new address that must be
    /// confirmed gets its confirmation mail.
    pub async fn update_user(
        &self,
        realm: &Realm,
        bearer: &Bearer,
        input: &UserInput,
    ) -> ControlResult<UserRow> {
        let user = &bearer.user;
        let (email, metadata) = checked_patch(user, input)?;
        let hash = match &input.password {
            Some(password) => {
                check_password(realm, password)?;
                let limit = [(
                    "password-change",
                    user.id.as_str(),
                    realm.config.login_rate_per_account,
                )];
                self.rate_limit(realm, &limit).await?;
                Some(hashed(self.auth.hasher.hash(password.clone()).await)?)
            }
            None => None,
        };
        let patch = UserPatch {
            email: email.as_deref(),
            password_hash: hash.as_deref(),
            user_metadata: metadata.as_ref(),
            reconfirm_email: realm.config.email_confirm_required,
        };
        let store = self.store()?;
        let updated = match store
            .update_auth_user(&realm.binding_id, &user.id, &patch)
            .await
        {
            Ok(Some(updated)) => updated,
            Ok(None) => return Err(AuthRefusal::BadJwt("this user no longer exists".into()).into()),
            Err(StoreError::Conflict { .. }) => return Err(AuthRefusal::EmailExists.into()),
            Err(e) => return Err(e.into()),
        };
        if hash.is_some() {
            let others = LogoutScope::Others(&bearer.session_id);
            store
                .revoke_sessions(&realm.binding_id, &user.id, others, "password changed")
                .await?;
        }
        if updated.email_confirmed_at.is_none() && updated.email != user.email {
            return self.send_token_mail(realm, updated, Purpose::Signup).await;
        }
        Ok(updated)
    }

    /// Mails a one-time token and answers the user with its sent-at
    /// recorded.
    async fn send_token_mail(
        &self,
        realm: &Realm,
        user: UserRow,
        purpose: Purpose,
    ) -> ControlResult<UserRow> {
        let store = self.store()?;
        let token = mds_auth::random_token();
        store
            .create_one_time_token(
                &user.id,
                purpose.as_str(),
                &token_hash(&token),
                ONE_TIME_TOKEN_SECS,
            )
            .await?;
        let (subject, body, withheld) = token_mail(realm, purpose, &token);
        if self.auth.mailer.delivers() {
            // In the background: an SMTP server's pace must not tell a
            // caller whether the address has an account.
            let (control, binding, to) =
                (self.clone(), realm.binding_id.clone(), user.email.clone());
            tokio::spawn(async move {
                let delivery = match control.auth.mailer.send(&to, subject, &body).await {
                    Ok(()) => "sent".to_string(),
                    Err(e) => {
                        tracing::warn!(realm = binding, error = %e, "could not send auth mail");
                        format!("failed: {e}")
                    }
                };
                if let Ok(store) = control.store() {
                    let _ = store
                        .add_mail(&binding, &to, subject, &withheld, &delivery)
                        .await;
                }
            });
        } else {
            // Only the sink keeps the live token; a record of anything
            // else does not.
            let (delivery, kept) = if realm.is_production() {
                tracing::warn!(
                    realm = realm.binding_id,
                    "auth mail in production with no --smtp-url; not delivered"
                );
                (
                    "undeliverable: production has no SMTP (--smtp-url)",
                    withheld,
                )
            } else {
                ("captured", body)
            };
            store
                .add_mail(&realm.binding_id, &user.email, subject, &kept, delivery)
                .await?;
        }
        Ok(store
            .auth_user(&realm.binding_id, UserKey::Id(&user.id))
            .await?
            .unwrap_or(user))
    }
}

/// The new email (normalised) and metadata of an update, checked: the
/// merged metadata must stay within [`MAX_METADATA_BYTES`].
fn checked_patch(
    user: &UserRow,
    input: &UserInput,
) -> ControlResult<(Option<String>, Option<Value>)> {
    let email = match &input.email {
        Some(raw) => {
            Some(mds_auth::normalize_email(raw).map_err(|why| AuthRefusal::invalid("email", why))?)
        }
        None => None,
    };
    let metadata = metadata_of(input)?;
    if let Some(Value::Object(patch)) = &metadata {
        let mut merged = user.user_metadata.as_object().cloned().unwrap_or_default();
        merged.extend(patch.clone());
        if Value::Object(merged).to_string().len() > MAX_METADATA_BYTES {
            return Err(AuthRefusal::invalid(
                "data",
                format!("the user's metadata would exceed {MAX_METADATA_BYTES} bytes"),
            )
            .into());
        }
    }
    Ok((email, metadata))
}

/// The mail carrying a one-time token: (subject, body, the body with the
/// token withheld, for records that must not hold it).
fn token_mail(realm: &Realm, purpose: Purpose, token: &str) -> (&'static str, String, String) {
    let base = realm
        .config
        .site_url
        .clone()
        .unwrap_or_else(|| format!("{}/verify", realm.url));
    let link = format!("{base}?token={token}&type={}", purpose.as_str());
    let (subject, intro) = match purpose {
        Purpose::Signup => (
            "Confirm your email address",
            "Confirm your email address with this link:",
        ),
        Purpose::Recovery => ("Reset your password", "Someone (we hope you) asked to reset your password. Log in with this link, then choose a new password:"),
    };
    let body =
        format!("{intro}\n\n{link}\n\nOr use this token: {token}\n\nIt expires in 24 hours.\n");
    (subject, body, format!("{intro}\n\n(token withheld)\n"))
}

/// The claims of a token of `realm`, or why not.
fn verified(realm: &Realm, token: &str) -> ControlResult<Value> {
    Ok(realm
        .verify(token)
        .map_err(|e| AuthRefusal::BadJwt(format!("invalid JWT: {e}")))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(result: ControlResult<Option<Value>>) -> Option<(&'static str, String)> {
        match result {
            Err(ControlError::Auth(AuthRefusal::Invalid { field, message })) => {
                Some((field, message))
            }
            _ => None,
        }
    }

    /// (data, accepted)
    #[test]
    fn metadata_is_a_small_object_without_nul() {
        let big = "x".repeat(MAX_METADATA_BYTES);
        let cases = [
            (None, true),
            (Some(Value::Null), true),
            (Some(json!({"plan": "pro"})), true),
            (Some(json!([1])), false),
            (Some(json!("text")), false),
            (Some(json!({"a": big})), false),
            (Some(json!({"a": "nul\u{0}"})), false),
        ];
        for (data, accepted) in cases {
            let input = UserInput {
                data: data.clone(),
                ..UserInput::default()
            };
            let result = metadata_of(&input);
            assert_eq!(result.is_ok(), accepted, "{data:?}");
            if !accepted {
                assert_eq!(refusal(result).map(|r| r.0), Some("data"), "{data:?}");
            }
        }
    }

    #[test]
    fn email_and_password_are_required_and_normalised() {
        let input = UserInput {
            email: Some("Ada@Example.COM".into()),
            password: Some(String::new()),
            data: None,
        };
        assert_eq!(email_of(&input).ok().as_deref(), Some("ada@example.com"));
        assert!(matches!(
            password_of(&input),
            Err(ControlError::Auth(AuthRefusal::Invalid {
                field: "password",
                ..
            }))
        ));
        assert!(matches!(
            email_of(&UserInput::default()),
            Err(ControlError::Auth(AuthRefusal::Invalid {
                field: "email",
                ..
            }))
        ));
    }
}
