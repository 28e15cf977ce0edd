//! What the API appends to the audit log: every request that changes
//! something (any method but GET and HEAD) made with an API key, and every
//! response that reveals secret values (a handler says so with
//! [`revealed`]: the names, never the values). The event names its actor
//! (the key's id and name), the peer address, the request id, an action
//! named from the route, the path as the target, and the outcome.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use mds_store::NewAuditEvent;

use crate::auth::Principal;
use crate::request_id::current_request_id;
use crate::state::AppState;

/// Put on a response by a handler that showed secret values: which.
#[derive(Debug, Clone)]
pub struct Revealed {
    pub project_id: Option<String>,
    /// The variable names (or what was shown, such as `credentials`).
    pub names: Vec<String>,
}

/// Marks `response` as revealing `names` of `project_id`.
pub fn revealed(
    mut response: Response,
    project_id: Option<&str>,
    names: impl IntoIterator<Item = String>,
) -> Response {
    response.extensions_mut().insert(Revealed {
        project_id: project_id.map(str::to_string),
        names: names.into_iter().collect(),
    });
    response
}

/// Actions by route, for the operations people look for; any other
/// change is named `METHOD /route`.
const ACTIONS: &[(&str, &str, &str)] = &[
    ("POST", "/projects", "project.create"),
    ("PATCH", "/projects/{project}", "project.update"),
    ("DELETE", "/projects/{project}", "project.delete"),
    (
        "POST",
        "/projects/{project}/environments",
        "environment.create",
    ),
    (
        "PATCH",
        "/projects/{project}/environments/{environment}",
        "environment.update",
    ),
    (
        "DELETE",
        "/projects/{project}/environments/{environment}",
        "environment.delete",
    ),
    (
        "POST",
        "/projects/{project}/environments/{environment}/extend",
        "environment.extend",
    ),
    (
        "POST",
        "/projects/{project}/environments/{environment}/credentials/rotate",
        "credentials.rotate",
    ),
    (
        "PUT",
        "/projects/{project}/environments/{environment}/credentials/schedule",
        "credentials.schedule",
    ),
    (
        "POST",
        "/projects/{project}/environments/{environment}/restore-points",
        "backup.restore_point",
    ),
    (
        "POST",
        "/projects/{project}/environments/{environment}/restores",
        "backup.restore",
    ),
    (
        "PUT",
        "/projects/{project}/environments/{environment}/backup-retention",
        "backup.retention",
    ),
    (
        "DELETE",
        "/restore-points/{id}",
        "backup.restore_point.delete",
    ),
    (
        "PUT",
        "/projects/{project}/shared-variables",
        "variable.set",
    ),
    (
        "DELETE",
        "/projects/{project}/shared-variables/{name}",
        "variable.delete",
    ),
    (
        "POST",
        "/projects/{project}/data-services",
        "data_service.attach",
    ),
    (
        "PATCH",
        "/projects/{project}/data-services/{service}",
        "data_service.configure",
    ),
    (
        "DELETE",
        "/projects/{project}/data-services/{service}",
        "data_service.delete",
    ),
    ("POST", "/databases", "data_service.attach"),
    ("DELETE", "/databases/{id}", "data_service.delete"),
    ("PATCH", "/services/{id}", "data_service.configure"),
    ("DELETE", "/services/{id}", "service.delete"),
    ("PUT", "/services/{id}/variables", "variable.set"),
    (
        "DELETE",
        "/services/{id}/variables/{names}",
        "variable.delete",
    ),
    ("POST", "/projects/{project}/auth", "auth.enable"),
    ("PATCH", "/projects/{project}/auth", "auth.configure"),
    ("POST", "/projects/{project}/auth/disable", "auth.disable"),
    (
        "POST",
        "/projects/{project}/auth/keys/rotate",
        "auth.rotate_keys",
    ),
    ("POST", "/project-auth/enable", "auth.enable"),
    ("POST", "/project-auth/disable", "auth.disable"),
    ("PATCH", "/project-auth/config", "auth.configure"),
    ("POST", "/computers/{id}/volumes", "volume.attach"),
    (
        "DELETE",
        "/computers/{id}/volumes/{attachment}",
        "volume.detach",
    ),
    ("POST", "/sandboxes/{id}/volumes", "volume.attach"),
    (
        "DELETE",
        "/sandboxes/{id}/volumes/{attachment}",
        "volume.detach",
    ),
    ("POST", "/deployments/{id}/volumes", "volume.attach"),
    ("POST", "/volumes/{id}/restore", "volume.restore"),
    ("DELETE", "/volumes/{id}", "volume.delete"),
    (
        "POST",
        "/deployments/{id}/versions/{version}/promote",
        "deployment.promote",
    ),
    (
        "POST",
        "/deployments/{id}/releases/{version}/promote",
        "deployment.promote",
    ),
    ("POST", "/deployments/{id}/rollback", "deployment.rollback"),
    ("POST", "/api-keys", "api_key.create"),
    ("PATCH", "/api-keys/{key}", "api_key.update"),
    ("DELETE", "/api-keys/{key}", "api_key.revoke"),
    ("POST", "/api-keys/{key}/rotate", "api_key.rotate"),
];

/// A route as matched (under `/api/v1` or `/v1`) as the API names it; the
/// request's path is already without the prefix.
fn api_route(matched: &str) -> &str {
    matched
        .strip_prefix("/api/v1")
        .or_else(|| matched.strip_prefix("/v1"))
        .unwrap_or(matched)
}

/// The action a change is recorded as.
pub fn action_of(method: &Method, route: &str) -> String {
    let route = api_route(route);
    ACTIONS
        .iter()
        .find(|(m, r, _)| *m == method.as_str() && *r == route)
        .map(|(_, _, action)| action.to_string())
        .unwrap_or_else(|| format!("{method} {route}"))
}

/// `ok` (2xx, 3xx), `refused` (4xx: the caller's mistake or no
/// permission) or `failed` (5xx).
fn outcome_of(status: u16) -> &'static str {
    match status {
        0..=399 => "ok",
        400..=499 => "refused",
        _ => "failed",
    }
}

/// The project a route's `{project}` names, as its id, when it is the
/// caller's (looked up before the handler runs: a delete removes it).
async fn project_of(
    state: &AppState,
    principal: &Principal,
    route: &str,
    path: &str,
) -> Option<String> {
    let at = route
        .split('/')
        .position(|segment| segment == "{project}")?;
    // Ids and slugs need no decoding.
    let reference = path.split('/').nth(at)?;
    let store = state.store().ok()?;
    store
        .project(&principal.tenant_id, reference)
        .await
        .ok()
        .flatten()
        .map(|p| p.id.clone())
}

pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(audit) = state.control().audit().cloned() else {
        return next.run(request).await;
    };
    let (Some(principal), Some(route)) = (
        request.extensions().get::<Arc<Principal>>().cloned(),
        request
            .extensions()
            .get::<MatchedPath>()
            .map(|m| api_route(m.as_str()).to_string()),
    ) else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let changes = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let project_id = if changes {
        project_of(&state, &principal, &route, &path).await
    } else {
        None
    };
    let response = next.run(request).await;
    let revealed = response.extensions().get::<Revealed>().cloned();
    if !changes && revealed.is_none() {
        return response;
    }
    // A body is not Sync: nothing below may hold the response itself.
    let status = response.status().as_u16();
    let event = |action: String, project_id: Option<String>, detail: String| NewAuditEvent {
        at: chrono::Utc::now(),
        actor_kind: "key".to_string(),
        actor_id: principal.key_id.clone(),
        actor_name: principal.key_name.clone(),
        tenant_id: Some(principal.tenant_id.clone()),
        project_id,
        source: source.clone(),
        request_id: current_request_id(),
        action,
        target: path.clone(),
        outcome: outcome_of(status).to_string(),
        detail,
    };
    if changes {
        audit.record(event(
            action_of(&method, &route),
            project_id.clone(),
            format!("{method} answered {status}"),
        ));
    }
    if let Some(revealed) = revealed {
        let project_id = match (revealed.project_id, project_id) {
            (Some(id), _) | (None, Some(id)) => Some(id),
            (None, None) => project_of(&state, &principal, &route, &path).await,
        };
        audit.record(event(
            "secret.reveal".to_string(),
            project_id,
            format!("names: {}", revealed.names.join(", ")),
        ));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_named_by_route_and_method() {
        assert_eq!(
            action_of(&Method::POST, "/api/v1/projects/{project}/data-services"),
            "data_service.attach"
        );
        assert_eq!(
            action_of(&Method::DELETE, "/v1/api-keys/{key}"),
            "api_key.revoke"
        );
        assert_eq!(
            action_of(&Method::POST, "/api/v1/sandboxes/{id}/exec"),
            "POST /sandboxes/{id}/exec"
        );
        assert_eq!(outcome_of(201), "ok");
        assert_eq!(outcome_of(422), "refused");
        assert_eq!(outcome_of(503), "failed");
    }
}
