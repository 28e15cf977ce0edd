//! The end-user auth API at `AUTH_URL` (`/auth/v1/{project}/{environment}`):
//! the GoTrue routes that supabase-auth and @supabase/auth-js call, the
//! MIOSA docs' routes, and the MIOSA SDK's `AppAuth` routes under
//! `/app-auth/{resource_type}/{resource_id}/{action}`.
//!
//! Errors carry both vocabularies: GoTrue's `code`/`error_code`/`msg`
//! (and `weak_password.reasons`) and the MIOSA envelope under `error`.
//! Responses are open to any origin: tokens travel in headers, never in
//! cookies.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use mds_core::ids::IdKind;
use mds_store::{LogoutScope, NewUser, Refresh, StoreError, UserKey, UserPatch, UserRow};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::extract::{parse_json, PathParams, QueryParams};
use crate::request_id::current_request_id;
use crate::state::AppState;
use mds_control::realms::{self as realm, Realm};

/// One-time email tokens (confirmation, recovery) live this long.
const ONE_TIME_TOKEN_SECS: f64 = 24.0 * 3600.0;

/// An error in both GoTrue's and MIOSA's shapes.
#[derive(Debug)]
pub struct AuthError {
    api: ApiError,
    weak_reasons: Option<Vec<&'static str>>,
}

type AuthResult<T> = Result<T, AuthError>;

impl From<ApiError> for AuthError {
    fn from(api: ApiError) -> Self {
        Self {
            api,
            weak_reasons: None,
        }
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<mds_control::ControlError> for AuthError {
    fn from(e: mds_control::ControlError) -> Self {
        ApiError::from(e).into()
    }
}

fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> AuthError {
    ApiError::new(status, code, message).into()
}

fn invalid_field(field: &str, code: &'static str, message: impl Into<String>) -> AuthError {
    let message = message.into();
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        code,
        format!("{field}: {message}"),
    )
    .with_details(json!({ "field": field, "reason": message }))
    .into()
}

fn bad_token(message: impl Into<String>) -> AuthError {
    fail(StatusCode::UNAUTHORIZED, "bad_jwt", message)
}

fn invalid_credentials() -> AuthError {
    fail(
        StatusCode::BAD_REQUEST,
        "invalid_credentials",
        "Invalid login credentials",
    )
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let api = self.api;
        let mut body = json!({
            "code": api.status.as_u16(),
            "error_code": api.code,
            "msg": api.message,
            "message": api.message,
            "error": {
                "code": api.code,
                "message": api.message,
                "request_id": current_request_id(),
            },
        });
        if let Some(details) = &api.details {
            body["error"]["details"] = details.clone();
        }
        if let Some(reasons) = self.weak_reasons {
            body["weak_password"] = json!({ "reasons": reasons });
        }
        let mut response = (api.status, axum::Json(body)).into_response();
        if let Some(after) = api.retry_after {
            if let Ok(value) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// Where the end-user API is mounted.
pub const PREFIX: &str = "/auth/v1/";

/// Under [`PREFIX`]: answers CORS preflights and lets any origin read the
/// answers.
pub async fn cors(request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with(PREFIX) {
        return next.run(request).await;
    }
    let preflight = request.method() == Method::OPTIONS;
    let requested = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            requested.unwrap_or_else(|| {
                HeaderValue::from_static("authorization, apikey, content-type, x-client-info")
            }),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
}

#[derive(Deserialize)]
pub struct RealmPath {
    project: String,
    environment: String,
}

#[derive(Deserialize)]
pub struct ActionPath {
    project: String,
    environment: String,
    resource_type: String,
    resource_id: String,
    action: String,
}

/// Every body field any route reads; each route takes what it needs.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Body {
    email: Option<String>,
    password: Option<String>,
    data: Option<Value>,
    refresh_token: Option<String>,
    token: Option<String>,
    token_hash: Option<String>,
    access_token: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn body(bytes: &Bytes) -> AuthResult<Body> {
    Ok(parse_json(bytes)?)
}

#[derive(Deserialize, Default)]
pub struct AuthQuery {
    grant_type: Option<String>,
    scope: Option<String>,
    token: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    redirect_to: Option<String>,
}

/// The client's address, for per-address rate limits. Proxies append to
/// `X-Forwarded-For`, so it is read from the right: past the peer and any
/// hop on loopback or a private network (proxies, an app's backend calling
/// for its users), the first public address is the client. A public peer
/// is the client itself, whatever it sends. IPv6 clients count per /64,
/// the block one subscriber gets.
fn client_addr(request: &Request) -> String {
    let Some(peer) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    else {
        return "unknown".to_string();
    };
    let mut client = peer;
    if is_internal(peer) {
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        for hop in forwarded.into_iter().rev() {
            client = hop;
            if !is_internal(hop) {
                break;
            }
        }
    }
    match client {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        other => other.to_string(),
    }
}

/// Loopback, private or link-local: a hop inside the operator's network.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal(IpAddr::V4(v4)),
            // fc00::/7 (unique local) and fe80::/10 (link-local).
            None => {
                v6.is_loopback()
                    || (v6.segments()[0] & 0xfe00) == 0xfc00
                    || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        },
    }
}

/// A session just opened or refreshed.
struct Issued {
    user: UserRow,
    access_token: String,
    refresh_token: String,
    expires_in: u32,
    expires_at: i64,
}

fn timestamp(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| {
        json!(t.to_rfc3339_opts(SecondsFormat::Micros, true))
    })
}

/// A user as GoTrue presents one.
fn user_json(user: &UserRow) -> Value {
    json!({
        "id": user.id,
        "aud": "authenticated",
        "role": user.role,
        "email": user.email,
        "phone": "",
        "email_confirmed_at": timestamp(user.email_confirmed_at),
        "confirmed_at": timestamp(user.email_confirmed_at),
        "confirmation_sent_at": timestamp(user.confirmation_sent_at),
        "recovery_sent_at": timestamp(user.recovery_sent_at),
        "last_sign_in_at": timestamp(user.last_sign_in_at),
        "app_metadata": { "provider": "email", "providers": ["email"] },
        "user_metadata": user.user_metadata,
        "identities": [],
        "is_anonymous": false,
        "created_at": timestamp(Some(user.created_at)),
        "updated_at": timestamp(Some(user.updated_at)),
    })
}

/// GoTrue's session: flat, `expires_at` in seconds; with the names the
/// MIOSA docs use (`token`, `user_id`) alongside.
fn gotrue_session(issued: &Issued) -> Value {
    json!({
        "access_token": issued.access_token,
        "token": issued.access_token,
        "token_type": "bearer",
        "expires_in": issued.expires_in,
        "expires_at": issued.expires_at,
        "refresh_token": issued.refresh_token,
        "user_id": issued.user.id,
        "user": user_json(&issued.user),
    })
}

fn rfc3339(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The MIOSA SDK's session: under `data`, `expires_at` as a timestamp.
fn miosa_session(user: &UserRow, token: &str, expires_at: i64, refresh: Option<&str>) -> Response {
    let mut data = json!({
        "user_id": user.id,
        "userId": user.id,
        "token": token,
        "access_token": token,
        "token_type": "Bearer",
        "expires_at": rfc3339(expires_at),
        "expiresAt": rfc3339(expires_at),
        "user": user_json(user),
    });
    if let Some(refresh) = refresh {
        data["refresh_token"] = json!(refresh);
    }
    axum::Json(json!({ "data": data })).into_response()
}

fn token_hash(token: &str) -> [u8; 32] {
    mds_crypto::digest_parts(&[b"auth-token", token.as_bytes()])
}

/// Signs an access token for `user` in `session_id`.
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

async fn open_session(state: &AppState, realm: &Realm, user: UserRow) -> AuthResult<Issued> {
    let session_id = IdKind::Session.mint();
    let refresh_token = mds_auth::random_token();
    state
        .store()?
        .create_session(
            &session_id,
            &realm.binding_id,
            &user.id,
            &token_hash(&refresh_token),
        )
        .await?;
    let (access_token, expires_at) = access_token(realm, &user, &session_id);
    Ok(Issued {
        user,
        access_token,
        refresh_token,
        expires_in: realm.config.token_expiry_sec,
        expires_at,
    })
}

/// Counts an attempt against each (kind, subject, limit); over any limit
/// is a 429 that says when to come back.
async fn rate_limit(
    state: &AppState,
    realm: &Realm,
    limits: &[(&str, &str, u32)],
) -> AuthResult<()> {
    let keys: Vec<String> = limits
        .iter()
        .map(|(kind, subject, _)| format!("{kind}:{}:{subject}", realm.binding_id))
        .collect();
    let counts = state.store()?.hit_rate_windows(&keys).await?;
    for ((kind, _, limit), key) in limits.iter().zip(&keys) {
        if let Some((_, hits, left)) = counts.iter().find(|(k, _, _)| k == key) {
            if *hits > *limit as i32 {
                let what = if *kind == "login-account" {
                    "this account"
                } else {
                    "this address"
                };
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "over_request_rate_limit",
                    format!(
                        "too many attempts for {what}; retry in {} s",
                        left.ceil() as u64
                    ),
                )
                .retry_after(Duration::from_secs_f64(left.max(1.0)))
                .into());
            }
        }
    }
    Ok(())
}

fn email_of(body: &Body) -> AuthResult<String> {
    let raw = body
        .email
        .as_deref()
        .ok_or_else(|| invalid_field("email", "validation_failed", "is required"))?;
    mds_auth::normalize_email(raw).map_err(|why| invalid_field("email", "validation_failed", why))
}

fn password_of(body: &Body) -> AuthResult<String> {
    body.password
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| invalid_field("password", "validation_failed", "is required"))
}

fn check_password(realm: &Realm, password: &str) -> AuthResult<()> {
    let problems = realm.config.password_problems(password);
    if problems.is_empty() {
        return Ok(());
    }
    let mut err = invalid_field("password", "weak_password", realm.config.password_rule());
    err.weak_reasons = Some(problems);
    Err(err)
}

/// Largest `user_metadata`: it travels in every access token.
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// `data` from a body: an object, small, with no NUL (which Postgres's
/// jsonb cannot store).
fn metadata_of(body: &Body) -> AuthResult<Option<Value>> {
    match &body.data {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => {
            let text = v.to_string();
            if text.len() > MAX_METADATA_BYTES {
                return Err(invalid_field(
                    "data",
                    "validation_failed",
                    format!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
                ));
            }
            if text.contains("\\u0000") {
                return Err(invalid_field(
                    "data",
                    "validation_failed",
                    "must not contain NUL characters",
                ));
            }
            Ok(Some(v.clone()))
        }
        Some(_) => Err(invalid_field(
            "data",
            "validation_failed",
            "must be an object",
        )),
    }
}

/// The hashing pool's queue is full: a 503 to retry, not a wait for all.
fn hashed<T>(result: Result<T, mds_auth::password::Busy>) -> AuthResult<T> {
    result.map_err(|busy| ApiError::unavailable(busy.to_string()).into())
}

/// Counts an attempt against the client's address (under `kind`) and the
/// account, then looks the account up (None when the email is unknown).
async fn limited_user(
    state: &AppState,
    realm: &Realm,
    kind: &str,
    addr: &str,
    email: &str,
) -> AuthResult<Option<UserRow>> {
    rate_limit(
        state,
        realm,
        &[
            (kind, addr, realm.config.login_rate_per_ip),
            ("login-account", email, realm.config.login_rate_per_account),
        ],
    )
    .await?;
    Ok(state
        .store()?
        .auth_user(&realm.binding_id, UserKey::Email(email))
        .await?)
}

enum SignedUp {
    Session(Issued),
    /// Email confirmation is required: no session until then.
    Unconfirmed(UserRow),
}

async fn signup(state: &AppState, realm: &Realm, addr: &str, body: &Body) -> AuthResult<SignedUp> {
    if !realm.config.allow_signups {
        return Err(fail(
            StatusCode::FORBIDDEN,
            "signup_disabled",
            "signups are turned off for this app",
        ));
    }
    let email = email_of(body)?;
    let password = password_of(body)?;
    check_password(realm, &password)?;
    let metadata = metadata_of(body)?.unwrap_or_else(|| json!({}));
    rate_limit(
        state,
        realm,
        &[("signup-address", addr, realm.config.login_rate_per_ip)],
    )
    .await?;
    let hash = hashed(state.auth.hasher.hash(password).await)?;
    let confirm = realm.config.email_confirm_required;
    let store = state.store()?;
    let user = match store
        .create_user(&NewUser {
            id: &IdKind::User.mint(),
            binding_id: &realm.binding_id,
            email: &email,
            password_hash: &hash,
            user_metadata: &metadata,
            confirmed: !confirm,
        })
        .await
    {
        Ok(user) => user,
        Err(StoreError::Conflict { .. }) => {
            // Nobody proved they own an unconfirmed address: whoever signs
            // up with it now takes it over (and must confirm it).
            let replaced = match confirm {
                true => {
                    store
                        .replace_unconfirmed_user(&realm.binding_id, &email, &hash, &metadata)
                        .await?
                }
                false => None,
            };
            match replaced {
                Some(user) => {
                    let user = send_token_mail(state, realm, user, "signup").await?;
                    return Ok(SignedUp::Unconfirmed(user));
                }
                None => {
                    return Err(fail(
                        StatusCode::CONFLICT,
                        "user_already_exists",
                        "a user with this email address already exists; log in instead",
                    ))
                }
            }
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(
        user = user.id,
        realm = realm.binding_id,
        "end user signed up"
    );
    if confirm {
        let user = send_token_mail(state, realm, user, "signup").await?;
        return Ok(SignedUp::Unconfirmed(user));
    }
    Ok(SignedUp::Session(open_session(state, realm, user).await?))
}

async fn password_login(
    state: &AppState,
    realm: &Realm,
    addr: &str,
    body: &Body,
) -> AuthResult<Issued> {
    let email = email_of(body)?;
    let password = password_of(body)?;
    let user = limited_user(state, realm, "login-address", addr, &email).await?;
    // An unknown email is checked against a decoy hash: same time, no.
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    if !hashed(state.auth.hasher.verify(password, hash).await)? {
        return Err(invalid_credentials());
    }
    let user = user.expect("verified against a real hash");
    if user.email_confirmed_at.is_none() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "email_not_confirmed",
            "confirm your email address first: follow the link in the message we sent",
        ));
    }
    open_session(state, realm, user).await
}

async fn refresh(state: &AppState, realm: &Realm, body: &Body) -> AuthResult<Issued> {
    let presented = body
        .refresh_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid_field("refresh_token", "validation_failed", "is required"))?;
    let next = mds_auth::random_token();
    match state
        .store()?
        .refresh_session(
            &realm.binding_id,
            &token_hash(presented),
            &token_hash(&next),
            f64::from(realm.config.refresh_reuse_interval_sec),
        )
        .await?
    {
        Refresh::Rotated { session_id, user } => {
            let (access_token, expires_at) = access_token(realm, &user, &session_id);
            Ok(Issued {
                user: *user,
                access_token,
                refresh_token: next,
                expires_in: realm.config.token_expiry_sec,
                expires_at,
            })
        }
        Refresh::Reused => {
            tracing::warn!(
                realm = realm.binding_id,
                "a spent refresh token was presented; its session is revoked"
            );
            Err(fail(
                StatusCode::BAD_REQUEST,
                "refresh_token_already_used",
                "Invalid Refresh Token: Already Used (the session is revoked; log in again)",
            ))
        }
        Refresh::Invalid => Err(fail(
            StatusCode::BAD_REQUEST,
            "refresh_token_not_found",
            "Invalid Refresh Token: Refresh Token Not Found",
        )),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// The user and claims of a valid access token whose session is live.
async fn token_user(state: &AppState, realm: &Realm, token: &str) -> AuthResult<(UserRow, Value)> {
    let claims = realm
        .verify(token)
        .map_err(|e| bad_token(format!("invalid JWT: {e}")))?;
    let (Some(sub), Some(session)) = (claims["sub"].as_str(), claims["session_id"].as_str()) else {
        return Err(bad_token("invalid JWT: it names no user or session"));
    };
    let user = state
        .store()?
        .session_user(&realm.binding_id, session, sub)
        .await?
        .ok_or_else(|| {
            fail(
                StatusCode::UNAUTHORIZED,
                "session_not_found",
                "this session has ended (logged out or revoked); log in again",
            )
        })?;
    Ok((user, claims))
}

async fn bearer_user(
    state: &AppState,
    realm: &Realm,
    headers: &HeaderMap,
) -> AuthResult<(UserRow, Value, String)> {
    let token = bearer(headers).ok_or_else(|| {
        fail(
            StatusCode::UNAUTHORIZED,
            "no_authorization",
            "send the access token as Authorization: Bearer <token>",
        )
    })?;
    let (user, claims) = token_user(state, realm, token).await?;
    Ok((user, claims, token.to_string()))
}

/// Ends sessions of the token's user. Idempotent: a token whose session
/// has already ended still gets its answer (only forgeries are refused).
async fn logout(
    state: &AppState,
    realm: &Realm,
    token: &str,
    scope: Option<&str>,
) -> AuthResult<()> {
    let claims = realm
        .verify(token)
        .map_err(|e| bad_token(format!("invalid JWT: {e}")))?;
    let user_id = claims["sub"].as_str().unwrap_or_default();
    let session = claims["session_id"].as_str().unwrap_or_default();
    let scope = match scope.unwrap_or("global") {
        "global" => LogoutScope::Global,
        "local" => LogoutScope::Local(session),
        "others" => LogoutScope::Others(session),
        other => {
            return Err(invalid_field(
                "scope",
                "validation_failed",
                format!("{other:?} is not global, local or others"),
            ))
        }
    };
    state
        .store()?
        .revoke_sessions(&realm.binding_id, user_id, scope, "logout")
        .await?;
    Ok(())
}

/// Mails a one-time token (`signup` confirmation or `recovery`) and
/// returns the user with its sent-at recorded.
async fn send_token_mail(
    state: &AppState,
    realm: &Realm,
    user: UserRow,
    purpose: &str,
) -> AuthResult<UserRow> {
    let store = state.store()?;
    let token = mds_auth::random_token();
    store
        .create_one_time_token(&user.id, purpose, &token_hash(&token), ONE_TIME_TOKEN_SECS)
        .await?;
    let base = realm
        .config
        .site_url
        .clone()
        .unwrap_or_else(|| format!("{}/verify", realm.url));
    let link = format!("{base}?token={token}&type={purpose}");
    let (subject, intro) = if purpose == "signup" {
        (
            "Confirm your email address",
            "Confirm your email address with this link:",
        )
    } else {
        ("Reset your password", "Someone (we hope you) asked to reset your password. Log in with this link, then choose a new password:")
    };
    let body =
        format!("{intro}\n\n{link}\n\nOr use this token: {token}\n\nIt expires in 24 hours.\n");
    if state.auth.mailer.delivers() {
        // In the background: an SMTP server's pace must not tell a caller
        // whether the address has an account.
        let (state, binding, to) = (state.clone(), realm.binding_id.clone(), user.email.clone());
        let withheld = format!("{intro}\n\n(token withheld)\n");
        tokio::spawn(async move {
            let delivery = match state.auth.mailer.send(&to, subject, &body).await {
                Ok(()) => "sent".to_string(),
                Err(e) => {
                    tracing::warn!(realm = binding, error = %e, "could not send auth mail");
                    format!("failed: {e}")
                }
            };
            if let Ok(store) = state.store() {
                let _ = store
                    .add_mail(&binding, &to, subject, &withheld, &delivery)
                    .await;
            }
        });
        return Ok(store
            .auth_user(&realm.binding_id, UserKey::Id(&user.id))
            .await?
            .unwrap_or(user));
    }
    let delivery = if realm.is_production() {
        tracing::warn!(
            realm = realm.binding_id,
            "auth mail in production with no --smtp-url; not delivered"
        );
        "undeliverable: production has no SMTP (--smtp-url)".to_string()
    } else {
        "captured".to_string()
    };
    // Only the sink keeps the live token; a record of anything else does not.
    let kept = if delivery == "captured" {
        body
    } else {
        format!("{intro}\n\n(token withheld)\n")
    };
    store
        .add_mail(&realm.binding_id, &user.email, subject, &kept, &delivery)
        .await?;
    Ok(store
        .auth_user(&realm.binding_id, UserKey::Id(&user.id))
        .await?
        .unwrap_or(user))
}

/// Sends a recovery mail if the address has an account; answers the same
/// either way, so the answer reveals nothing.
async fn recover(state: &AppState, realm: &Realm, addr: &str, body: &Body) -> AuthResult<()> {
    let email = email_of(body)?;
    let user = limited_user(state, realm, "recover-address", addr, &email).await?;
    // At most one recovery mail per interval to an address: no mail bombs.
    let interval = chrono::Duration::seconds(i64::from(realm.config.mail_min_interval_sec));
    if let Some(user) = user.filter(|u| {
        u.recovery_sent_at
            .is_none_or(|sent| chrono::Utc::now() - sent >= interval)
    }) {
        send_token_mail(state, realm, user, "recovery").await?;
    }
    Ok(())
}

/// Spends a confirmation or recovery token: the email is confirmed and a
/// session opens.
async fn verify(state: &AppState, realm: &Realm, token: Option<&str>) -> AuthResult<Issued> {
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid_field("token", "validation_failed", "is required"))?;
    let (user, _purpose) = state
        .store()?
        .consume_one_time_token(&realm.binding_id, &token_hash(token))
        .await?
        .ok_or_else(|| {
            fail(
                StatusCode::FORBIDDEN,
                "otp_expired",
                "this link or token is invalid or has expired",
            )
        })?;
    open_session(state, realm, user).await
}

/// Changes the token's user; a new password ends the user's other
/// sessions (whoever else held one is out).
async fn update_user(
    state: &AppState,
    realm: &Realm,
    user: &UserRow,
    session_id: &str,
    body: &Body,
) -> AuthResult<UserRow> {
    let email = match &body.email {
        Some(raw) => Some(
            mds_auth::normalize_email(raw)
                .map_err(|why| invalid_field("email", "validation_failed", why))?,
        ),
        None => None,
    };
    let metadata = metadata_of(body)?;
    if let Some(Value::Object(patch)) = &metadata {
        let mut merged = user.user_metadata.as_object().cloned().unwrap_or_default();
        merged.extend(patch.clone());
        if Value::Object(merged).to_string().len() > MAX_METADATA_BYTES {
            return Err(invalid_field(
                "data",
                "validation_failed",
                format!("the user's metadata would exceed {MAX_METADATA_BYTES} bytes"),
            ));
        }
    }
    let hash = match &body.password {
        Some(password) => {
            check_password(realm, password)?;
            rate_limit(
                state,
                realm,
                &[(
                    "password-change",
                    &user.id,
                    realm.config.login_rate_per_account,
                )],
            )
            .await?;
            Some(hashed(state.auth.hasher.hash(password.clone()).await)?)
        }
        None => None,
    };
    let patch = UserPatch {
        email: email.as_deref(),
        password_hash: hash.as_deref(),
        user_metadata: metadata.as_ref(),
        reconfirm_email: realm.config.email_confirm_required,
    };
    match state
        .store()?
        .update_auth_user(&realm.binding_id, &user.id, &patch)
        .await
    {
        Ok(Some(updated)) => {
            if hash.is_some() {
                state
                    .store()?
                    .revoke_sessions(
                        &realm.binding_id,
                        &user.id,
                        LogoutScope::Others(session_id),
                        "password changed",
                    )
                    .await?;
            }
            // A new address that must be confirmed gets its confirmation mail.
            if updated.email_confirmed_at.is_none() && updated.email != user.email {
                return send_token_mail(state, realm, updated, "signup").await;
            }
            Ok(updated)
        }
        Ok(None) => Err(bad_token("this user no longer exists")),
        Err(StoreError::Conflict { .. }) => Err(fail(
            StatusCode::CONFLICT,
            "email_exists",
            "another user has this email address",
        )),
        Err(e) => Err(e.into()),
    }
}

async fn load(state: &AppState, path: &RealmPath) -> AuthResult<Arc<Realm>> {
    Ok(realm::load(state, &path.project, &path.environment).await?)
}

fn ok_json(value: Value) -> Response {
    axum::Json(value).into_response()
}

// ---- GoTrue and MIOSA-docs routes ----

pub async fn gotrue_signup(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    request: Request,
) -> AuthResult<Response> {
    let realm = load(&state, &path).await?;
    let addr = client_addr(&request);
    let bytes = read(request).await?;
    match signup(&state, &realm, &addr, &body(&bytes)?).await? {
        SignedUp::Session(issued) => Ok(ok_json(gotrue_session(&issued))),
        SignedUp::Unconfirmed(user) => {
            let mut json = user_json(&user);
            json["user_id"] = json!(user.id);
            json["confirmation_required"] = json!(true);
            Ok(ok_json(json))
        }
    }
}

async fn read(request: Request) -> AuthResult<Bytes> {
    Ok(crate::extract::read_body(request, 64 * 1024).await?)
}

/// `POST /token?grant_type=password|refresh_token`; without a grant type,
/// a body with a refresh token refreshes and one with an email logs in.
pub async fn gotrue_token(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    QueryParams(query): QueryParams<AuthQuery>,
    request: Request,
) -> AuthResult<Response> {
    let realm = load(&state, &path).await?;
    let addr = client_addr(&request);
    let body = body(&read(request).await?)?;
    let grant = query
        .grant_type
        .as_deref()
        .unwrap_or(if body.refresh_token.is_some() {
            "refresh_token"
        } else {
            "password"
        });
    let issued = match grant {
        "password" => password_login(&state, &realm, &addr, &body).await?,
        "refresh_token" => refresh(&state, &realm, &body).await?,
        other => {
            return Err(invalid_field(
                "grant_type",
                "validation_failed",
                format!("{other:?} is not supported; use password or refresh_token"),
            ))
        }
    };
    Ok(ok_json(gotrue_session(&issued)))
}

pub async fn gotrue_refresh(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    bytes: Bytes,
) -> AuthResult<Response> {
    let realm = load(&state, &path).await?;
    let issued = refresh(&state, &realm, &body(&bytes)?).await?;
    Ok(ok_json(gotrue_session(&issued)))
}

pub async fn gotrue_user(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    headers: HeaderMap,
) -> AuthResult<Response> {
    let realm = load(&state, &path).await?;
    let (user, _, _) = bearer_user(&state, &realm, &headers).await?;
    Ok(ok_json(user_json(&user)))
}

pub async fn gotrue_update_user(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    headers: HeaderMap,
    bytes: Bytes,
) -> AuthResult<Response> {
    let realm = load(&state, &path).await?;
    let (user, claims, _) = bearer_user(&state, &realm, &headers).await?;
    let session = claims["session_id"].as_str().unwrap_or_default();
    let user = update_user(&state, &realm, &user, session, &body(&bytes)?).await?;
    Ok(ok_json(user_json(&user)))
}

/// `POST /logout?scope=global|local|others` with the access token as the
/// bearer (or, as the MIOSA docs send it, in the body).
pub async fn gotrue_logout(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    QueryParams(query): QueryParams<AuthQuery>,
    headers: HeaderMap,
    bytes: Bytes,
) -> AuthResult<Response> {
    let realm = load(&state, &path).await?;
    let body = body(&bytes)?;
    let token = bearer(&headers)
        .map(str::to_string)
        .or(body.access_token.or(body.token))
        .ok_or_else(|| bad_token("send the access token as Authorization: Bearer <token>"))?;
    logout(&state, &realm, &token, query.scope.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /recover` (GoTrue) and `POST /reset` (MIOSA docs).
pub async fn gotrue_recover(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    request: Request,
) -> AuthResult<Response> {
    let realm = load(&state, &path).await?;
    let addr = client_addr(&request);
    recover(&state, &realm, &addr, &body(&read(request).await?)?).await?;
    Ok(ok_json(json!({})))
}

/// `POST /verify {type, token}`: a session.
pub async fn gotrue_verify(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    bytes: Bytes,
) -> AuthResult<Response> {
    let realm = load(&state, &path).await?;
    let body = body(&bytes)?;
    let token = body.token.as_deref().or(body.token_hash.as_deref());
    let issued = verify(&state, &realm, token).await?;
    Ok(ok_json(gotrue_session(&issued)))
}

/// `scheme://host[:port]` of an http(s) URL.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.contains('\\') {
        return None;
    }
    Some(format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase()
    ))
}

/// `GET /verify?token=&type=&redirect_to=`: the link in the mail. Goes on
/// to `redirect_to` if it is on the site URL's origin, else to the site
/// URL, with the session in the fragment, as GoTrue does; with no site
/// URL, answers the session as JSON.
pub async fn gotrue_verify_link(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    QueryParams(query): QueryParams<AuthQuery>,
) -> AuthResult<Response> {
    let realm = load(&state, &path).await?;
    // Only the app's own origin: anything else would make this link an
    // open redirect (and a way to log a victim into someone's account).
    let site = realm.config.site_url.clone();
    let target = match (query.redirect_to, &site) {
        (Some(wanted), Some(site))
            if origin(&wanted).is_some() && origin(&wanted) == origin(site) =>
        {
            Some(wanted)
        }
        _ => site,
    }
    .filter(|t| !t.chars().any(char::is_control));
    let issued = verify(&state, &realm, query.token.as_deref()).await?;
    match target {
        Some(target) => {
            let fragment = format!(
                "access_token={}&refresh_token={}&expires_in={}&expires_at={}&token_type=bearer&type={}",
                issued.access_token,
                issued.refresh_token,
                issued.expires_in,
                issued.expires_at,
                mds_core::env::url_encode(query.kind.as_deref().unwrap_or("signup")),
            );
            let location =
                HeaderValue::from_str(&format!("{target}#{fragment}")).map_err(|_| {
                    invalid_field("redirect_to", "validation_failed", "is not a valid URL")
                })?;
            Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
        }
        None => Ok(ok_json(gotrue_session(&issued))),
    }
}

pub async fn gotrue_settings(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
) -> AuthResult<Response> {
    let realm = load(&state, &path).await?;
    let config = &realm.config;
    Ok(ok_json(json!({
        "external": { "email": config.providers.iter().any(|p| p == "email"), "phone": false },
        "disable_signup": !config.allow_signups,
        "mailer_autoconfirm": !config.email_confirm_required,
        "phone_autoconfirm": false,
        "sms_provider": "",
        "saml_enabled": false,
        "password_min_length": config.password_min_length,
        "jwt_algorithm": config.signing_algorithm,
        "jwt_expiry": config.token_expiry_sec,
    })))
}

pub async fn gotrue_health(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
) -> AuthResult<Response> {
    load(&state, &path).await?;
    Ok(ok_json(json!({
        "name": "mds-auth",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "mds end-user auth (GoTrue-compatible)",
    })))
}

pub async fn jwks(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
) -> AuthResult<Response> {
    let realm = load(&state, &path).await?;
    let mut response = ok_json(realm.jwks.clone());
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    Ok(response)
}

// ---- the MIOSA SDK's AppAuth ----

/// `/app-auth/{resource_type}/{resource_id}/{action}`. `AUTH_URL` already
/// names the project and environment; the resource must be of them.
pub async fn app_auth(
    State(state): State<AppState>,
    PathParams(path): PathParams<ActionPath>,
    method: Method,
    request: Request,
) -> AuthResult<Response> {
    let realm = realm::load(&state, &path.project, &path.environment).await?;
    check_resource(&realm, &path.resource_type, &path.resource_id)?;
    let addr = client_addr(&request);
    let headers = request.headers().clone();
    let body = body(&read(request).await?)?;
    match (method, path.action.as_str()) {
        (Method::POST, "signup") => match signup(&state, &realm, &addr, &body).await? {
            SignedUp::Session(i) => Ok(miosa_session(
                &i.user,
                &i.access_token,
                i.expires_at,
                Some(&i.refresh_token),
            )),
            SignedUp::Unconfirmed(user) => Ok(ok_json(json!({ "data": {
                "user_id": user.id,
                "userId": user.id,
                "confirmation_required": true,
                "user": user_json(&user),
            }}))),
        },
        (Method::POST, "login") => {
            let i = password_login(&state, &realm, &addr, &body).await?;
            Ok(miosa_session(&i.user, &i.access_token, i.expires_at, Some(&i.refresh_token)))
        }
        (Method::POST, "verify") => {
            let i = verify(&state, &realm, body.token.as_deref()).await?;
            Ok(miosa_session(&i.user, &i.access_token, i.expires_at, Some(&i.refresh_token)))
        }
        (Method::POST, "refresh") => {
            let i = refresh(&state, &realm, &body).await?;
            Ok(miosa_session(&i.user, &i.access_token, i.expires_at, Some(&i.refresh_token)))
        }
        (Method::POST, "password-reset") => {
            recover(&state, &realm, &addr, &body).await?;
            Ok(ok_json(json!({ "data": { "ok": true } })))
        }
        (Method::POST, "logout") => {
            let token = body
                .token
                .or(body.access_token)
                .or_else(|| bearer(&headers).map(str::to_string))
                .ok_or_else(|| invalid_field("token", "validation_failed", "is required"))?;
            logout(&state, &realm, &token, Some("local")).await?;
            Ok(ok_json(json!({ "data": { "ok": true } })))
        }
        (Method::GET, "me") => {
            let (user, claims, token) = bearer_user(&state, &realm, &headers).await?;
            let exp = claims["exp"].as_i64().unwrap_or_default();
            Ok(miosa_session(&user, &token, exp, None))
        }
        (_, "signup" | "login" | "verify" | "refresh" | "password-reset" | "logout" | "me") => {
            Err(fail(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "me is GET; the other actions are POST",
            ))
        }
        (_, other) => Err(fail(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!(
                "no action {other:?}; use signup, login, verify, refresh, password-reset, logout or me"
            ),
        )),
    }
}

/// A `project` resource must be this realm's project (id or slug);
/// sandboxes and deployments are checked against it once they exist here.
fn check_resource(realm: &Realm, resource_type: &str, resource_id: &str) -> AuthResult<()> {
    match resource_type {
        "project" if resource_id == realm.project_id || resource_id == realm.project_slug => Ok(()),
        "project" => Err(fail(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("this AUTH_URL does not serve project {resource_id:?}"),
        )),
        "sandbox" | "deployment" => Ok(()),
        other => Err(fail(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("resource_type {other:?} is not sandbox, deployment or project"),
        )),
    }
}
