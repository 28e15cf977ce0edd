//! SDK calls this server knows and does not offer: each answers 501
//! `NOT_IMPLEMENTED` naming its feature (after the caller's key is
//! checked), never 404 "no such route", so a client can tell "not here"
//! from a wrong path. The README lists them.

use axum::body::Bytes;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// `(method, path, feature)` of every call answered 501.
const NOT_OFFERED: &[(MethodFilter, &str, &str)] = &[
    (
        MethodFilter::POST,
        "/services/{id}/scale",
        "scaling a service's replicas",
    ),
    (
        MethodFilter::POST,
        "/services/{id}/redeploy",
        "service redeploys from source (use the service's deployment)",
    ),
    (
        MethodFilter::GET,
        "/services/{id}/deployments",
        "service releases (use the service's deployment: deployments.versions)",
    ),
    (
        MethodFilter::POST,
        "/services/{id}/deployments",
        "service releases (publish to the service's deployment)",
    ),
    (
        MethodFilter::GET,
        "/services/{id}/deployments/{release}",
        "service releases",
    ),
    (
        MethodFilter::GET,
        "/services/{id}/deployments/{release}/events",
        "service release events",
    ),
    (
        MethodFilter::POST,
        "/service-deployments/{release}/rollback",
        "service release rollback (deployments.rollback)",
    ),
    (
        MethodFilter::POST,
        "/service-deployments/{release}/redeploy",
        "service release redeploys",
    ),
    (
        MethodFilter::POST,
        "/service-deployments/{release}/cancel",
        "cancelling a service release",
    ),
    (
        MethodFilter::DELETE,
        "/service-deployments/{release}",
        "removing a service release",
    ),
    (
        MethodFilter::GET,
        "/services/{id}/builds/{build}/logs",
        "build logs (services are not built from source here)",
    ),
    (MethodFilter::GET, "/services/{id}/runs", "cron runs"),
    (
        MethodFilter::PUT,
        "/services/{id}/public-address",
        "public addresses for services",
    ),
    (
        MethodFilter::DELETE,
        "/services/{id}/public-address",
        "public addresses for services",
    ),
    (MethodFilter::POST, "/uploads", "source uploads"),
    (
        MethodFilter::GET,
        "/projects/{project}/services/setting-capabilities",
        "service setting capabilities",
    ),
    (
        MethodFilter::GET,
        "/projects/{project}/services/{id}/domains",
        "custom domains",
    ),
    (
        MethodFilter::POST,
        "/projects/{project}/services/{id}/domains",
        "custom domains",
    ),
    (
        MethodFilter::POST,
        "/projects/{project}/services/{id}/domains/{domain}/verify",
        "custom domains",
    ),
    (
        MethodFilter::DELETE,
        "/projects/{project}/services/{id}/domains/{domain}",
        "custom domains",
    ),
    (
        MethodFilter::GET,
        "/projects/{project}/services/{id}/metrics/series",
        "service metrics",
    ),
    (
        MethodFilter::GET,
        "/projects/{project}/services/{id}/protection",
        "password protection",
    ),
    (
        MethodFilter::PUT,
        "/projects/{project}/services/{id}/protection",
        "password protection",
    ),
    (
        MethodFilter::DELETE,
        "/projects/{project}/services/{id}/protection",
        "password protection",
    ),
    (
        MethodFilter::POST,
        "/projects/{project}/services/{id}/share-links",
        "share links",
    ),
    (
        MethodFilter::DELETE,
        "/projects/{project}/services/{id}/share-links/{link}",
        "share links",
    ),
    (
        MethodFilter::GET,
        "/projects/{project}/services/{id}/waf",
        "the web application firewall",
    ),
    (
        MethodFilter::PUT,
        "/projects/{project}/services/{id}/waf",
        "the web application firewall",
    ),
    (
        MethodFilter::DELETE,
        "/projects/{project}/services/{id}/waf",
        "the web application firewall",
    ),
    (
        MethodFilter::GET,
        "/projects/{project}/previews",
        "pull-request preview settings",
    ),
    (
        MethodFilter::PUT,
        "/projects/{project}/previews",
        "pull-request preview settings",
    ),
    (
        MethodFilter::DELETE,
        "/projects/{project}/previews/{preview}",
        "pull-request preview settings",
    ),
    (
        MethodFilter::GET,
        "/projects/{project}/environments/{environment}/log-drains",
        "log drains",
    ),
    (
        MethodFilter::POST,
        "/projects/{project}/environments/{environment}/log-drains",
        "log drains",
    ),
    (
        MethodFilter::PATCH,
        "/projects/{project}/environments/{environment}/log-drains/{drain}",
        "log drains",
    ),
    (
        MethodFilter::DELETE,
        "/projects/{project}/environments/{environment}/log-drains/{drain}",
        "log drains",
    ),
    (
        MethodFilter::POST,
        "/projects/{project}/environments/{environment}/log-drains/{drain}/test",
        "log drains",
    ),
];

/// Every call of [`NOT_OFFERED`], answered 501.
pub fn routes() -> Router<AppState> {
    // One path may carry several methods: gather them first.
    let mut paths: Vec<(&str, MethodRouter<AppState>)> = Vec::new();
    for (method, path, feature) in NOT_OFFERED {
        let route = on(*method, refuse(feature));
        match paths.iter_mut().find(|(p, _)| p == path) {
            Some((_, existing)) => *existing = std::mem::take(existing).merge(route),
            None => paths.push((path, route)),
        }
    }
    paths
        .into_iter()
        .fold(Router::new(), |api, (path, route)| api.route(path, route))
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
