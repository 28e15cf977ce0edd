//! SDK calls this server knows and does not offer: each answers 501
//! `NOT_IMPLEMENTED` naming its feature (after the caller's key is
//! checked), never 404 "no such route", so a client can tell "not here"
//! from a wrong path. The README lists them.

use axum::body::Bytes;
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::Router;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// `(method, path, feature)` of every call answered 501.
const NOT_OFFERED: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/services/{id}/scale",
        "scaling a service's replicas",
    ),
    (
        "POST",
        "/services/{id}/redeploy",
        "service redeploys from source (use the service's deployment)",
    ),
    (
        "GET",
        "/services/{id}/deployments",
        "service releases (use the service's deployment: deployments.versions)",
    ),
    (
        "POST",
        "/services/{id}/deployments",
        "service releases (publish to the service's deployment)",
    ),
    (
        "GET",
        "/services/{id}/deployments/{release}",
        "service releases",
    ),
    (
        "GET",
        "/services/{id}/deployments/{release}/events",
        "service release events",
    ),
    (
        "POST",
        "/service-deployments/{release}/rollback",
        "service release rollback (deployments.rollback)",
    ),
    (
        "POST",
        "/service-deployments/{release}/redeploy",
        "service release redeploys",
    ),
    (
        "POST",
        "/service-deployments/{release}/cancel",
        "cancelling a service release",
    ),
    (
        "DELETE",
        "/service-deployments/{release}",
        "removing a service release",
    ),
    (
        "GET",
        "/services/{id}/builds/{build}/logs",
        "build logs (services are not built from source here)",
    ),
    ("GET", "/services/{id}/runs", "cron runs"),
    (
        "PUT",
        "/services/{id}/public-address",
        "public addresses for services",
    ),
    (
        "DELETE",
        "/services/{id}/public-address",
        "public addresses for services",
    ),
    ("POST", "/uploads", "source uploads"),
    (
        "GET",
        "/projects/{project}/services/setting-capabilities",
        "service setting capabilities",
    ),
    (
        "GET",
        "/projects/{project}/services/{id}/domains",
        "custom domains",
    ),
    (
        "POST",
        "/projects/{project}/services/{id}/domains",
        "custom domains",
    ),
    (
        "POST",
        "/projects/{project}/services/{id}/domains/{domain}/verify",
        "custom domains",
    ),
    (
        "DELETE",
        "/projects/{project}/services/{id}/domains/{domain}",
        "custom domains",
    ),
    (
        "GET",
        "/projects/{project}/services/{id}/metrics/series",
        "service metrics",
    ),
    (
        "GET",
        "/projects/{project}/services/{id}/protection",
        "password protection",
    ),
    (
        "PUT",
        "/projects/{project}/services/{id}/protection",
        "password protection",
    ),
    (
        "DELETE",
        "/projects/{project}/services/{id}/protection",
        "password protection",
    ),
    (
        "POST",
        "/projects/{project}/services/{id}/share-links",
        "share links",
    ),
    (
        "DELETE",
        "/projects/{project}/services/{id}/share-links/{link}",
        "share links",
    ),
    (
        "GET",
        "/projects/{project}/services/{id}/waf",
        "the web application firewall",
    ),
    (
        "PUT",
        "/projects/{project}/services/{id}/waf",
        "the web application firewall",
    ),
    (
        "DELETE",
        "/projects/{project}/services/{id}/waf",
        "the web application firewall",
    ),
    (
        "GET",
        "/projects/{project}/previews",
        "pull-request preview settings",
    ),
    (
        "PUT",
        "/projects/{project}/previews",
        "pull-request preview settings",
    ),
    (
        "DELETE",
        "/projects/{project}/previews/{preview}",
        "pull-request preview settings",
    ),
    (
        "GET",
        "/projects/{project}/environments/{environment}/log-drains",
        "log drains",
    ),
    (
        "POST",
        "/projects/{project}/environments/{environment}/log-drains",
        "log drains",
    ),
    (
        "PATCH",
        "/projects/{project}/environments/{environment}/log-drains/{drain}",
        "log drains",
    ),
    (
        "DELETE",
        "/projects/{project}/environments/{environment}/log-drains/{drain}",
        "log drains",
    ),
    (
        "POST",
        "/projects/{project}/environments/{environment}/log-drains/{drain}/test",
        "log drains",
    ),
];

/// Every call of [`NOT_OFFERED`], answered 501.
pub fn routes() -> Router<AppState> {
    // One path may carry several methods: gather them first.
    let mut paths: Vec<(&str, MethodRouter<AppState>)> = Vec::new();
    for (method, path, feature) in NOT_OFFERED {
        let route = match *method {
            "GET" => get(refuse(feature)),
            "POST" => post(refuse(feature)),
            "PUT" => put(refuse(feature)),
            "PATCH" => patch(refuse(feature)),
            _ => delete(refuse(feature)),
        };
        match paths.iter_mut().find(|(p, _)| p == path) {
            Some((_, existing)) => *existing = std::mem::take(existing).merge(route),
            None => paths.push((path, route)),
        }
    }
    paths
        .into_iter()
        .fold(Router::new(), |api, (path, route)| api.route(path, route))
}

/// `PATCH /services/{id}` (the SDK's `services.update`).
pub async fn update_service(principal: Principal, body: Bytes) -> Result<(), ApiError> {
    refuse("updating a service's name, source or settings")(principal, body).await
}

/// A handler that answers 501 for `feature` to a caller with a valid key.
/// It reads the body it ignores: a request body left unread makes the
/// server close the connection, which a client reusing it sees as a reset.
fn refuse(
    feature: &'static str,
) -> impl Fn(Principal, Bytes) -> std::future::Ready<Result<(), ApiError>> + Clone + Send + Sync + 'static
{
    move |_, _| std::future::ready(Err(ApiError::not_implemented(feature)))
}
