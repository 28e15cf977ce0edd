//! The end-user auth API at `AUTH_URL` (`/auth/v1/{project}/{environment}`),
//! in its wire dialects over the one set of operations in
//! `mds_control::sessions`: the GoTrue routes that supabase-auth and
//! @supabase/auth-js call, with the MIOSA docs' aliases ([`gotrue`]), and
//! the MIOSA SDK's `AppAuth` routes under
//! `/app-auth/{resource_type}/{resource_id}/{action}` ([`sdk`]).
//!
//! This module holds what the dialects share: extraction (body, client
//! address, bearer token), the error shape and CORS.
//!
//! Errors carry both vocabularies: GoTrue's `code`/`error_code`/`msg`
//! (and `weak_password.reasons`) and the MIOSA envelope under `error`.
//! Responses are open to any origin: tokens travel in headers, never in
//! cookies.

mod gotrue;
mod sdk;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mds_api_types::auth::{AppMetadata, AuthErrorBody, AuthUser, Micros, WeakPassword};
use mds_api_types::ErrorBody;
use mds_control::realms::{self as realm, Realm};
use mds_control::sessions::{Bearer, UserInput};
use mds_control::{AuthRefusal, ControlError};
use mds_store::UserRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::extract::{parse_json, read_body};
use crate::request_id::current_request_id;
use crate::state::AppState;

pub use gotrue::{
    gotrue_health, gotrue_logout, gotrue_recover, gotrue_refresh, gotrue_settings, gotrue_signup,
    gotrue_token, gotrue_update_user, gotrue_user, gotrue_verify, gotrue_verify_link, jwks,
};
pub use sdk::app_auth;

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

impl From<ControlError> for AuthError {
    fn from(e: ControlError) -> Self {
        let weak_reasons = match &e {
            ControlError::Auth(AuthRefusal::WeakPassword { reasons, .. }) => Some(reasons.clone()),
            _ => None,
        };
        Self {
            api: e.into(),
            weak_reasons,
        }
    }
}

impl From<AuthRefusal> for AuthError {
    fn from(e: AuthRefusal) -> Self {
        ControlError::from(e).into()
    }
}

fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> AuthError {
    ApiError::new(status, code, message).into()
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let api = self.api;
        let body = AuthErrorBody {
            code: api.status.as_u16(),
            error_code: api.code.to_string(),
            msg: api.message.clone(),
            message: api.message.clone(),
            error: ErrorBody {
                code: api.code.to_string(),
                message: api.message,
                request_id: current_request_id(),
                details: api.details,
                retryable: None,
                retry_after_ms: None,
            },
            weak_password: self.weak_reasons.map(|reasons| WeakPassword {
                reasons: reasons.into_iter().map(str::to_string).collect(),
            }),
        };
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

async fn load(state: &AppState, project: &str, environment: &str) -> AuthResult<Arc<Realm>> {
    Ok(realm::load(state, project, environment).await?)
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
}

impl Body {
    fn parse(bytes: &Bytes) -> AuthResult<Self> {
        Ok(parse_json(bytes)?)
    }

    /// What the body says about a user.
    fn user(&self) -> UserInput {
        UserInput {
            email: self.email.clone(),
            password: self.password.clone(),
            data: self.data.clone(),
        }
    }
}

/// The body of a request, parsed.
async fn read(request: Request) -> AuthResult<Body> {
    Body::parse(&read_body(request, 64 * 1024).await?)
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

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// The bearer's live session, and its token.
async fn bearer_user(
    state: &AppState,
    realm: &Realm,
    headers: &HeaderMap,
) -> AuthResult<(Bearer, String)> {
    let token = bearer(headers).ok_or_else(|| {
        fail(
            StatusCode::UNAUTHORIZED,
            "no_authorization",
            "send the access token as Authorization: Bearer <token>",
        )
    })?;
    Ok((state.bearer(realm, token).await?, token.to_string()))
}

/// A user as GoTrue presents one (the SDK's bodies embed the same).
fn user_view(user: &UserRow) -> AuthUser {
    AuthUser {
        id: user.id.clone(),
        aud: "authenticated".to_string(),
        role: user.role.clone(),
        email: user.email.clone(),
        phone: String::new(),
        email_confirmed_at: user.email_confirmed_at.map(Micros),
        confirmed_at: user.email_confirmed_at.map(Micros),
        confirmation_sent_at: user.confirmation_sent_at.map(Micros),
        recovery_sent_at: user.recovery_sent_at.map(Micros),
        last_sign_in_at: user.last_sign_in_at.map(Micros),
        app_metadata: AppMetadata::email(),
        user_metadata: user.user_metadata.clone(),
        identities: Vec::new(),
        is_anonymous: false,
        created_at: Micros(user.created_at),
        updated_at: Micros(user.updated_at),
    }
}

fn ok<T: Serialize>(body: T) -> Response {
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;
    use mds_control::AuthRefusal;

    use crate::error::ApiError;

    /// Each refusal of the end-user API: (refusal, status, GoTrue code).
    #[test]
    fn auth_refusals_map_to_gotrue_statuses_and_codes() {
        let cases = [
            (
                AuthRefusal::invalid("email", "is required"),
                422,
                "validation_failed",
            ),
            (
                AuthRefusal::WeakPassword {
                    rule: "at least 8 characters".into(),
                    reasons: vec!["length"],
                },
                422,
                "weak_password",
            ),
            (AuthRefusal::SignupDisabled, 403, "signup_disabled"),
            (AuthRefusal::UserAlreadyExists, 409, "user_already_exists"),
            (AuthRefusal::EmailExists, 409, "email_exists"),
            (AuthRefusal::InvalidCredentials, 400, "invalid_credentials"),
            (AuthRefusal::EmailNotConfirmed, 400, "email_not_confirmed"),
            (
                AuthRefusal::RefreshTokenAlreadyUsed,
                400,
                "refresh_token_already_used",
            ),
            (
                AuthRefusal::RefreshTokenNotFound,
                400,
                "refresh_token_not_found",
            ),
            (
                AuthRefusal::BadJwt("invalid JWT: expired".into()),
                401,
                "bad_jwt",
            ),
            (AuthRefusal::SessionNotFound, 401, "session_not_found"),
            (AuthRefusal::OtpExpired, 403, "otp_expired"),
            (
                AuthRefusal::RateLimited {
                    what: "this address",
                    retry_in_secs: 3,
                    retry_after: Duration::from_secs(3),
                },
                429,
                "over_request_rate_limit",
            ),
        ];
        for (refusal, status, code) in cases {
            let what = format!("{refusal:?}");
            let api = ApiError::from(refusal);
            assert_eq!(api.status, StatusCode::from_u16(status).unwrap(), "{what}");
            assert_eq!(api.code, code, "{what}");
        }
    }

    #[test]
    fn a_refused_field_is_named_in_the_details() {
        let api = ApiError::from(AuthRefusal::invalid("email", "is required"));
        assert_eq!(api.message, "email: is required");
        let details = api.details.unwrap_or_default();
        assert_eq!(details["field"], "email");
        assert_eq!(details["reason"], "is required");
        let limited = ApiError::from(AuthRefusal::RateLimited {
            what: "this account",
            retry_in_secs: 2,
            retry_after: Duration::from_secs(2),
        });
        assert_eq!(limited.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(
            limited.message,
            "too many attempts for this account; retry in 2 s"
        );
    }
}
