//! `GET /audit-events` (scope `audit:read`): the caller's tenant's events,
//! newest first, paged by seq; and `GET /audit-events/verify` (the
//! operator's `*`): the whole chain checked.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use mds_control::projects::load_project;
use mds_store::{AuditEventRow, AuditQuery};
use serde::{Deserialize, Serialize};

use super::data;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryParams;
use crate::state::AppState;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Deserialize)]
pub struct EventsQuery {
    /// A project id or slug.
    project: Option<String>,
    /// RFC 3339.
    since: Option<String>,
    /// Actions starting with this (`data_service.`).
    action: Option<String>,
    /// Events older than this seq: the next page.
    before: Option<i64>,
    limit: Option<i64>,
}

#[derive(Serialize)]
struct EventsPage {
    events: Vec<AuditEventRow>,
    /// Pass as `before` for the next page; null on the last.
    next_before: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<EventsQuery>,
) -> ApiResult<Response> {
    principal.require("audit:read")?;
    let store = state.store()?;
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "limit",
                format!("from 1 to {MAX_LIMIT}"),
            ))
        }
    };
    let since = query
        .since
        .as_deref()
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::invalid_field("since", "an RFC 3339 time, like 2026-12-07T10:00:00Z")
                })
        })
        .transpose()?;
    let project_id = match &query.project {
        Some(reference) => Some(load_project(store, &principal, reference).await?.id.clone()),
        None => None,
    };
    let events = store
        .audit_events(&AuditQuery {
            tenant_id: Some(principal.tenant_id.clone()),
            project_id,
            since,
            action: query.action.filter(|a| !a.is_empty()),
            before: query.before,
            limit,
        })
        .await?;
    let next_before = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(data(
        StatusCode::OK,
        EventsPage {
            events,
            next_before,
        },
    ))
}

pub async fn verify(State(state): State<AppState>, principal: Principal) -> ApiResult<Response> {
    // The chain holds every tenant's events: the operator's to check.
    principal.require("*")?;
    if let Some(audit) = state.control().audit() {
        audit.flush().await;
    }
    let found = mds_control::audit::verify(state.store()?, &state.master_key).await?;
    Ok(data(StatusCode::OK, found))
}
