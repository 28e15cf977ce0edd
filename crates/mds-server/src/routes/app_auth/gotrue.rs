//! GoTrue's dialect: flat bodies, `expires_at` in epoch seconds, what
//! supabase-auth and @supabase/auth-js call. The MIOSA docs' routes are
//! aliases over the same handlers (`/refresh`, `/reset`, and `token`,
//! `user_id` next to GoTrue's names in a session).

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mds_api_types::auth::{
    AuthHealth, AuthSettings, Empty, ExternalProviders, GoTrueSession, GoTrueUnconfirmed,
};
use mds_control::sessions::{Issued, Scope, SignedUp};
use mds_control::AuthRefusal;
use serde::Deserialize;

use super::{
    bearer, bearer_user, client_addr, load, ok, read, user_view, AuthResult, Body, RealmPath,
};
use crate::extract::{PathParams, QueryParams};
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub struct AuthQuery {
    grant_type: Option<String>,
    scope: Option<String>,
    token: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    redirect_to: Option<String>,
}

fn session(issued: Issued) -> GoTrueSession {
    GoTrueSession {
        token: issued.access_token.clone(),
        access_token: issued.access_token,
        token_type: "bearer".to_string(),
        expires_in: issued.expires_in,
        expires_at: issued.expires_at,
        refresh_token: issued.refresh_token,
        user_id: issued.user.id.clone(),
        user: user_view(&issued.user),
    }
}

pub async fn gotrue_signup(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    request: Request,
) -> AuthResult<Response> {
    let realm = load(&state, &path.project, &path.environment).await?;
    let addr = client_addr(&request);
    let body = read(request).await?;
    match state.sign_up(&realm, &addr, &body.user()).await? {
        SignedUp::Session(issued) => Ok(ok(session(issued))),
        SignedUp::Unconfirmed(user) => Ok(ok(GoTrueUnconfirmed {
            user: user_view(&user),
            user_id: user.id,
            confirmation_required: true,
        })),
    }
}

/// `POST /token?grant_type=password|refresh_token`; without a grant type,
/// a body with a refresh token refreshes and one with an email logs in.
pub async fn gotrue_token(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    QueryParams(query): QueryParams<AuthQuery>,
    request: Request,
) -> AuthResult<Response> {
    let realm = load(&state, &path.project, &path.environment).await?;
    let addr = client_addr(&request);
    let body = read(request).await?;
    let grant = query
        .grant_type
        .as_deref()
        .unwrap_or(if body.refresh_token.is_some() {
            "refresh_token"
        } else {
            "password"
        });
    let issued = match grant {
        "password" => state.password_login(&realm, &addr, &body.user()).await?,
        "refresh_token" => state.refresh(&realm, body.refresh_token.as_deref()).await?,
        other => {
            return Err(AuthRefusal::invalid(
                "grant_type",
                format!("{other:?} is not supported; use password or refresh_token"),
            )
            .into())
        }
    };
    Ok(ok(session(issued)))
}

/// `POST /refresh` (MIOSA docs): `/token?grant_type=refresh_token`.
pub async fn gotrue_refresh(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    bytes: Bytes,
) -> AuthResult<Response> {
    let realm = load(&state, &path.project, &path.environment).await?;
    let body = Body::parse(&bytes)?;
    let issued = state.refresh(&realm, body.refresh_token.as_deref()).await?;
    Ok(ok(session(issued)))
}

pub async fn gotrue_user(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    headers: HeaderMap,
) -> AuthResult<Response> {
    let realm = load(&state, &path.project, &path.environment).await?;
    let (holder, _) = bearer_user(&state, &realm, &headers).await?;
    Ok(ok(user_view(&holder.user)))
}

pub async fn gotrue_update_user(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    headers: HeaderMap,
    bytes: Bytes,
) -> AuthResult<Response> {
    let realm = load(&state, &path.project, &path.environment).await?;
    let (holder, _) = bearer_user(&state, &realm, &headers).await?;
    let body = Body::parse(&bytes)?;
    let user = state.update_user(&realm, &holder, &body.user()).await?;
    Ok(ok(user_view(&user)))
}

fn scope(scope: Option<&str>) -> Result<Scope, AuthRefusal> {
    match scope.unwrap_or("global") {
        "global" => Ok(Scope::Global),
        "local" => Ok(Scope::Local),
        "others" => Ok(Scope::Others),
        other => Err(AuthRefusal::invalid(
            "scope",
            format!("{other:?} is not global, local or others"),
        )),
    }
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
    let realm = load(&state, &path.project, &path.environment).await?;
    let body = Body::parse(&bytes)?;
    let token = bearer(&headers)
        .map(str::to_string)
        .or(body.access_token.or(body.token))
        .ok_or_else(|| {
            AuthRefusal::BadJwt("send the access token as Authorization: Bearer <token>".into())
        })?;
    let scope = scope(query.scope.as_deref())?;
    state.logout(&realm, &token, scope).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /recover` (GoTrue) and `POST /reset` (MIOSA docs).
pub async fn gotrue_recover(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    request: Request,
) -> AuthResult<Response> {
    let realm = load(&state, &path.project, &path.environment).await?;
    let addr = client_addr(&request);
    let body = read(request).await?;
    state.recover(&realm, &addr, &body.user()).await?;
    Ok(ok(Empty {}))
}

/// `POST /verify {type, token}`: a session.
pub async fn gotrue_verify(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    bytes: Bytes,
) -> AuthResult<Response> {
    let realm = load(&state, &path.project, &path.environment).await?;
    let body = Body::parse(&bytes)?;
    let token = body.token.as_deref().or(body.token_hash.as_deref());
    Ok(ok(session(state.verify_token(&realm, token).await?)))
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

/// Where a mail link goes on: `redirect_to` if it is on the site URL's
/// origin, else the site URL. Only the app's own origin: anything else
/// would make the link an open redirect (and a way to log a victim into
/// someone's account).
fn link_target(site: Option<&str>, wanted: Option<String>) -> Option<String> {
    match (wanted, site) {
        (Some(wanted), Some(site))
            if origin(&wanted).is_some() && origin(&wanted) == origin(site) =>
        {
            Some(wanted)
        }
        (_, site) => site.map(str::to_string),
    }
    .filter(|t| !t.chars().any(char::is_control))
}

/// `GET /verify?token=&type=&redirect_to=`: the link in the mail. Goes on
/// to [`link_target`] with the session in the fragment, as GoTrue does;
/// with no site URL, answers the session as JSON.
pub async fn gotrue_verify_link(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
    QueryParams(query): QueryParams<AuthQuery>,
) -> AuthResult<Response> {
    let realm = load(&state, &path.project, &path.environment).await?;
    let target = link_target(realm.config.site_url.as_deref(), query.redirect_to);
    let issued = state.verify_token(&realm, query.token.as_deref()).await?;
    let Some(target) = target else {
        return Ok(ok(session(issued)));
    };
    let fragment = format!(
        "access_token={}&refresh_token={}&expires_in={}&expires_at={}&token_type=bearer&type={}",
        issued.access_token,
        issued.refresh_token,
        issued.expires_in,
        issued.expires_at,
        mds_core::env::url_encode(query.kind.as_deref().unwrap_or("signup")),
    );
    let location = HeaderValue::from_str(&format!("{target}#{fragment}"))
        .map_err(|_| AuthRefusal::invalid("redirect_to", "is not a valid URL"))?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
}

pub async fn gotrue_settings(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
) -> AuthResult<Response> {
    let realm = load(&state, &path.project, &path.environment).await?;
    let config = &realm.config;
    Ok(ok(AuthSettings {
        external: ExternalProviders {
            email: config.providers.iter().any(|p| p == "email"),
            phone: false,
        },
        disable_signup: !config.allow_signups,
        mailer_autoconfirm: !config.email_confirm_required,
        phone_autoconfirm: false,
        sms_provider: String::new(),
        saml_enabled: false,
        password_min_length: config.password_min_length,
        jwt_algorithm: config.signing_algorithm.clone(),
        jwt_expiry: config.token_expiry_sec,
    }))
}

pub async fn gotrue_health(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
) -> AuthResult<Response> {
    load(&state, &path.project, &path.environment).await?;
    Ok(ok(AuthHealth {
        name: "mds-auth".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        description: "mds end-user auth (GoTrue-compatible)".to_string(),
    }))
}

pub async fn jwks(
    State(state): State<AppState>,
    PathParams(path): PathParams<RealmPath>,
) -> AuthResult<Response> {
    let realm = load(&state, &path.project, &path.environment).await?;
    let mut response = ok(&realm.jwks);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::link_target;

    /// (site URL, redirect_to, where the link goes)
    #[test]
    fn mail_links_go_only_to_the_apps_own_origin() {
        let site = Some("https://app.example.com/welcome");
        let cases: &[(Option<&str>, Option<&str>, Option<&str>)] = &[
            (site, None, site),
            (
                site,
                Some("https://APP.example.com/in"),
                Some("https://APP.example.com/in"),
            ),
            (site, Some("https://evil.example.com/"), site),
            (site, Some("https://app.example.com@evil.com/"), site),
            (site, Some("javascript:alert(1)"), site),
            (site, Some("http://app.example.com/in"), site),
            (None, Some("https://app.example.com/in"), None),
            (Some("https://app.example.com/\n"), None, None),
        ];
        for (site, wanted, expected) in cases {
            let got = link_target(*site, wanted.map(str::to_string));
            assert_eq!(
                got.as_deref(),
                *expected,
                "site {site:?}, redirect_to {wanted:?}"
            );
        }
    }
}
