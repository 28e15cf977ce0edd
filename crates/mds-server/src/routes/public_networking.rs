//! MIOSA `/databases/{id}/public-networking`: what it does is
//! `mds_control::public_networking`'s; here is HTTP.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::public_networking::EnablePublicNetworking;
use mds_control::public_networking;

use super::data;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams};
use crate::state::AppState;

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let view = public_networking::status(state.control(), &principal, &id).await?;
    Ok(data(StatusCode::OK, view))
}

/// Opens the endpoint; the body's allowlist replaces the stored one (an
/// empty body admits any source).
pub async fn enable(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<EnablePublicNetworking>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let view = public_networking::enable(state.control(), &principal, &id, body.allowlist).await?;
    Ok(data(StatusCode::OK, view))
}

pub async fn disable(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let view = public_networking::disable(state.control(), &principal, &id).await?;
    Ok(data(StatusCode::OK, view))
}
