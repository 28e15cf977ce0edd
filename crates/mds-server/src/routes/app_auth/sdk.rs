//! The MIOSA SDK's `AppAuth` dialect: `/app-auth/{resource_type}/
//! {resource_id}/{action}`, bodies under `data`, camelCase twins of the
//! ids, `expires_at` as a timestamp.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use chrono::DateTime;
use mds_api_types::auth::{Done, SdkSession, SdkUnconfirmed, Secs};
use mds_api_types::Data;
use mds_control::realms::Realm;
use mds_control::sessions::{Issued, Scope, SignedUp};
use mds_control::AuthRefusal;
use mds_store::UserRow;
use serde::Deserialize;

use super::{bearer, bearer_user, client_addr, fail, load, ok, read, user_view, AuthResult, Body};
use crate::extract::PathParams;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct ActionPath {
    project: String,
    environment: String,
    resource_type: String,
    resource_id: String,
    action: String,
}

/// The session as the SDK reads it; `refresh` is absent from `me`.
fn session(user: &UserRow, token: String, expires_at: i64, refresh: Option<String>) -> Response {
    let expires_at = DateTime::from_timestamp(expires_at, 0).map(Secs);
    ok(Data {
        data: SdkSession {
            user_id: user.id.clone(),
            user_id_camel: user.id.clone(),
            token: token.clone(),
            access_token: token,
            token_type: "Bearer".to_string(),
            expires_at,
            expires_at_camel: expires_at,
            user: user_view(user),
            refresh_token: refresh,
        },
    })
}

fn issued(i: Issued) -> Response {
    session(&i.user, i.access_token, i.expires_at, Some(i.refresh_token))
}

fn done() -> Response {
    ok(Data {
        data: Done { ok: true },
    })
}

/// `/app-auth/{resource_type}/{resource_id}/{action}`. `AUTH_URL` already
/// names the project and environment; the resource must be of them.
pub async fn app_auth(
    State(state): State<AppState>,
    PathParams(path): PathParams<ActionPath>,
    method: Method,
    request: Request,
) -> AuthResult<Response> {
    let realm = load(&state, &path.project, &path.environment).await?;
    check_resource(&realm, &path.resource_type, &path.resource_id)?;
    let addr = client_addr(&request);
    let headers = request.headers().clone();
    let body = read(request).await?;
    let (state, realm) = (&state, &realm);
    match (method, path.action.as_str()) {
        (Method::POST, "signup") => match state.sign_up(realm, &addr, &body.user()).await? {
            SignedUp::Session(i) => Ok(issued(i)),
            SignedUp::Unconfirmed(user) => Ok(ok(Data {
                data: SdkUnconfirmed {
                    user_id: user.id.clone(),
                    user_id_camel: user.id.clone(),
                    confirmation_required: true,
                    user: user_view(&user),
                },
            })),
        },
        (Method::POST, "login") => Ok(issued(state.password_login(realm, &addr, &body.user()).await?)),
        (Method::POST, "verify") => Ok(issued(state.verify_token(realm, body.token.as_deref()).await?)),
        (Method::POST, "refresh") => Ok(issued(state.refresh(realm, body.refresh_token.as_deref()).await?)),
        (Method::POST, "password-reset") => {
            state.recover(realm, &addr, &body.user()).await?;
            Ok(done())
        }
        (Method::POST, "logout") => logout(state, realm, &headers, body).await,
        (Method::GET, "me") => {
            let (holder, token) = bearer_user(state, realm, &headers).await?;
            Ok(session(&holder.user, token, holder.expires_at, None))
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

/// Ends the token's own session; the SDK sends the token in the body.
async fn logout(
    state: &AppState,
    realm: &Realm,
    headers: &HeaderMap,
    body: Body,
) -> AuthResult<Response> {
    let token = body
        .token
        .or(body.access_token)
        .or_else(|| bearer(headers).map(str::to_string))
        .ok_or_else(|| AuthRefusal::invalid("token", "is required"))?;
    state.logout(realm, &token, Scope::Local).await?;
    Ok(done())
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
