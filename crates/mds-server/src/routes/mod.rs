//! The HTTP surface: `/healthz`, and the MIOSA API under `/api/v1` (alias
//! `/v1`).

mod api_keys;
mod app_auth;
mod audit_events;
mod backups;
mod data_services;
mod database_logs;
mod database_metrics;
mod deployments;
pub(crate) mod env;
mod environments;
mod health;
mod not_offered;
mod project_auth;
mod projects;
mod public_networking;
mod runtime_env;
mod sandboxes;
mod services;
mod storage;
pub(crate) mod variables;
mod volumes;

use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;
use crate::state::AppState;
use crate::{audit, auth, idempotency, request_id};

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/projects", get(projects::list).post(projects::create))
        .route(
            "/projects/{project}",
            get(projects::get)
                .patch(projects::update)
                .delete(projects::delete),
        )
        .route(
            "/projects/{project}/environments",
            get(environments::list).post(environments::create),
        )
        .route(
            "/projects/{project}/environments/{environment}",
            get(environments::get)
                .patch(environments::update)
                .delete(environments::delete),
        )
        .route(
            "/projects/{project}/environments/{environment}/duplicate",
            post(environments::duplicate),
        )
        .route(
            "/projects/{project}/environments/{environment}/extend",
            post(environments::extend),
        )
        .route(
            "/projects/{project}/environments/{environment}/sync",
            post(environments::sync),
        )
        .route(
            "/projects/{project}/environments/{environment}/credentials/rotate",
            post(environments::rotate_credentials),
        )
        .route(
            "/projects/{project}/environments/{environment}/credentials/schedule",
            put(environments::schedule_rotation),
        )
        .route("/projects/{project}/summary", get(projects::summary))
        .route("/projects/{project}/backups", get(backups::overview))
        .route(
            "/projects/{project}/environments/{environment}/restore-points",
            get(backups::list).post(backups::create),
        )
        .route(
            "/projects/{project}/environments/{environment}/restores",
            post(backups::restore),
        )
        .route(
            "/projects/{project}/environments/{environment}/backup-retention",
            put(backups::set_retention),
        )
        .route(
            "/restore-points/{id}",
            get(backups::get_one).delete(backups::delete),
        )
        .route("/restore-points/{id}/verify", post(backups::verify))
        .route("/projects/{project}/move", post(projects::move_project))
        .route(
            "/projects/{project}/templates/{slug}/apply",
            post(projects::apply_template),
        )
        .route("/project-capabilities", get(projects::capabilities))
        .route("/project-templates", get(projects::templates))
        .route("/project-templates/{slug}", get(projects::templates))
        .route(
            "/projects/{project}/shared-variables",
            get(variables::list).put(variables::set),
        )
        .route(
            "/projects/{project}/shared-variables/{name}",
            get(variables::get).delete(variables::delete),
        )
        .route(
            "/projects/{project}/shared-variables/{name}/reveal",
            get(variables::reveal),
        )
        .route(
            "/projects/{project}/data-services",
            get(data_services::list).post(data_services::create),
        )
        .route(
            "/projects/{project}/data-services/{service}",
            get(data_services::get)
                .delete(data_services::delete)
                .patch(data_services::update),
        )
        .route("/projects/{project}/env", get(env::resolve))
        .route(
            "/projects/{project}/services",
            get(services::list).post(services::create),
        )
        .route(
            "/services/{id}",
            get(services::get)
                .delete(services::delete)
                .patch(services::update),
        )
        .route("/services/{id}/connection", get(services::connection))
        .route("/services/{id}/start", post(services::start))
        .route("/services/{id}/stop", post(services::stop))
        .route("/services/{id}/restart", post(services::restart))
        .route(
            "/services/{id}/variables",
            get(services::variables).put(services::set_variables),
        )
        .route(
            "/services/{id}/variables/effective",
            get(services::effective),
        )
        .route(
            "/services/{id}/variables/{names}",
            axum::routing::delete(services::delete_variables),
        )
        .route(
            "/services/{id}/variables/{name}/reveal",
            get(services::reveal),
        )
        .route(
            "/databases",
            get(data_services::db_list).post(data_services::db_create),
        )
        .route(
            "/databases/{id}",
            get(data_services::db_get).delete(data_services::db_delete),
        )
        .route(
            "/databases/{id}/credentials",
            get(data_services::db_credentials),
        )
        .route("/databases/{id}/start", post(data_services::db_start))
        .route("/databases/{id}/stop", post(data_services::db_stop))
        .route("/databases/{id}/restart", post(data_services::db_restart))
        .route("/databases/{id}/logs", get(data_services::db_logs))
        .route("/databases/{id}/metrics", get(database_metrics::metrics))
        .route(
            "/databases/{id}/logs/stream",
            get(database_logs::stream_logs),
        )
        .route(
            "/databases/{id}/public-networking",
            get(public_networking::get)
                .post(public_networking::enable)
                .delete(public_networking::disable),
        )
        .route(
            "/storage/buckets",
            get(storage::list_buckets).post(storage::create_bucket),
        )
        .route(
            "/storage/buckets/{id}",
            get(storage::get_bucket)
                .patch(storage::update_bucket)
                .delete(storage::delete_bucket),
        )
        .route(
            "/storage/buckets/{id}/credentials",
            get(storage::get_bucket_credentials),
        )
        .route("/storage/buckets/{id}/objects", get(storage::list_objects))
        .route(
            "/storage/buckets/{bucket}/objects/{*key}",
            axum::routing::delete(storage::delete_object),
        )
        .route("/storage/buckets/{id}/presign", post(storage::presign))
        .route(
            "/projects/{project}/auth",
            get(project_auth::native_status)
                .post(project_auth::native_enable)
                .patch(project_auth::native_update),
        )
        .route(
            "/projects/{project}/auth/disable",
            post(project_auth::native_disable),
        )
        .route("/projects/{project}/auth/users", get(project_auth::users))
        .route(
            "/projects/{project}/auth/users/{user}",
            axum::routing::delete(project_auth::delete_user),
        )
        .route("/projects/{project}/auth/mail", get(project_auth::mail))
        .route(
            "/projects/{project}/auth/keys/rotate",
            post(project_auth::rotate_keys),
        )
        .route("/project-auth/status", get(project_auth::miosa_status))
        .route("/project-auth/enable", post(project_auth::miosa_enable))
        .route("/project-auth/disable", post(project_auth::miosa_disable))
        .route(
            "/project-auth/config",
            axum::routing::patch(project_auth::miosa_update),
        )
        .route("/sandboxes", get(sandboxes::list).post(sandboxes::create))
        .route("/sandboxes/by-name/{name}", get(sandboxes::by_name))
        .route(
            "/sandboxes/{id}",
            get(sandboxes::get).delete(sandboxes::destroy),
        )
        .route("/sandboxes/{id}/readiness", get(sandboxes::readiness))
        .route(
            "/sandboxes/{id}/readiness/stream",
            get(sandboxes::readiness_stream),
        )
        .route("/sandboxes/{id}/exec", post(sandboxes::exec))
        .route("/sandboxes/{id}/exec/stream", post(sandboxes::exec_stream))
        .route("/sandboxes/{id}/stop", post(sandboxes::stop))
        .route("/sandboxes/{id}/pause", post(sandboxes::pause))
        .route("/sandboxes/{id}/resume", post(sandboxes::resume))
        .route(
            "/sandboxes/{id}/env",
            get(sandboxes::env_get).put(sandboxes::env_set),
        )
        .route(
            "/sandboxes/{id}/env/{key}",
            axum::routing::delete(sandboxes::env_delete),
        )
        .route("/volumes", get(volumes::list).post(volumes::create))
        .route("/volumes/{id}", get(volumes::get).delete(volumes::delete))
        .route(
            "/volumes/{id}/snapshots",
            get(volumes::snapshots).post(volumes::snapshot),
        )
        .route("/volumes/{id}/restore", post(volumes::restore))
        .route(
            "/computers/{id}/volumes",
            get(volumes::attachments).post(volumes::attach),
        )
        .route(
            "/computers/{id}/volumes/{attachment}",
            axum::routing::delete(volumes::detach),
        )
        .route(
            "/sandboxes/{id}/volumes",
            get(volumes::attachments).post(volumes::attach),
        )
        .route(
            "/sandboxes/{id}/volumes/{attachment}",
            axum::routing::delete(volumes::detach),
        )
        .route(
            "/deployments",
            get(deployments::list).post(deployments::create),
        )
        .route(
            "/deployments/{id}",
            get(deployments::get)
                .patch(deployments::update)
                .delete(deployments::delete),
        )
        .route("/deployments/{id}/stop", post(deployments::stop))
        .route("/deployments/{id}/publish", post(deployments::publish))
        .route("/deployments/{id}/rollback", post(deployments::rollback))
        .route("/deployments/{id}/redeploy", post(deployments::redeploy))
        .route("/deployments/{id}/logs", get(deployments::logs))
        .route("/deployments/{id}/versions", get(deployments::versions))
        .route(
            "/deployments/{id}/versions/{version}",
            get(deployments::version),
        )
        .route(
            "/deployments/{id}/versions/{version}/promote",
            post(deployments::promote),
        )
        .route(
            "/deployments/{id}/versions/{version}/logs",
            get(deployments::version_logs),
        )
        .route("/deployments/{id}/releases", get(deployments::releases))
        .route(
            "/deployments/{id}/releases/{version}",
            get(deployments::release),
        )
        .route(
            "/deployments/{id}/releases/{version}/promote",
            post(deployments::promote_release),
        )
        .route("/deployments/{id}/builds", get(deployments::builds))
        .route(
            "/deployments/{id}/runtime-instances",
            get(deployments::instances),
        )
        .route(
            "/deployments/{id}/runtime-instances/{instance}",
            get(deployments::instance),
        )
        .route(
            "/deployments/{id}/runtime-instances/{instance}/logs",
            get(deployments::instance_logs),
        )
        .route(
            "/deployments/{id}/env",
            get(deployments::env_list).post(deployments::env_set),
        )
        .route(
            "/deployments/{id}/env/{key}",
            axum::routing::delete(deployments::env_delete),
        )
        .route(
            "/deployments/{id}/database",
            post(deployments::attach_database),
        )
        .route(
            "/deployments/{id}/volumes",
            get(deployments::volumes).post(deployments::attach_volume),
        )
        .route("/sandboxes/{id}/deploy", post(deployments::sandbox_deploy))
        .route("/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/api-keys/presets", get(api_keys::presets))
        .route(
            "/api-keys/{key}",
            get(api_keys::get)
                .patch(api_keys::update)
                .delete(api_keys::delete),
        )
        .route("/api-keys/{key}/rotate", post(api_keys::rotate))
        .route("/audit-events", get(audit_events::list))
        .route("/audit-events/verify", get(audit_events::verify))
        .merge(not_offered::routes())
        .route(
            "/runtime-env",
            get(runtime_env::list).post(runtime_env::set),
        )
        .route(
            "/runtime-env/{id}",
            get(runtime_env::get).delete(runtime_env::delete),
        )
        // Inner layers run last: authenticate, then deduplicate (a replay
        // is no new operation), then audit.
        .route_layer(from_fn_with_state(state.clone(), audit::middleware))
        .route_layer(from_fn_with_state(state.clone(), idempotency::middleware))
        .route_layer(from_fn_with_state(state.clone(), auth::middleware))
        .route("/healthz", get(health::healthz))
        // Open by bearer key, presigned URL or public bucket: no middleware.
        .route(
            "/storage/buckets/{bucket}/objects/{*key}",
            get(storage::get_object)
                .put(storage::put_object)
                .options(storage::preflight),
        );

    // End users of apps, at AUTH_URL: no API key, any origin.
    let end_users = Router::new()
        .route("/signup", post(app_auth::gotrue_signup))
        .route("/token", post(app_auth::gotrue_token))
        .route("/refresh", post(app_auth::gotrue_refresh))
        .route(
            "/user",
            get(app_auth::gotrue_user)
                .put(app_auth::gotrue_update_user)
                .patch(app_auth::gotrue_update_user),
        )
        .route("/logout", post(app_auth::gotrue_logout))
        .route("/recover", post(app_auth::gotrue_recover))
        .route("/reset", post(app_auth::gotrue_recover))
        .route(
            "/verify",
            get(app_auth::gotrue_verify_link).post(app_auth::gotrue_verify),
        )
        .route("/settings", get(app_auth::gotrue_settings))
        .route("/health", get(app_auth::gotrue_health))
        .route("/.well-known/jwks.json", get(app_auth::jwks))
        .route(
            "/app-auth/{resource_type}/{resource_id}/{action}",
            get(app_auth::app_auth).post(app_auth::app_auth),
        );

    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .nest("/auth/v1/{project}/{environment}", end_users)
        .nest("/api/v1", api.clone())
        .nest("/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Outside the routes, so that it also answers preflights, which
        // no route has a method for.
        .layer(axum::middleware::from_fn(app_auth::cors))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a handler panicked").into_response()
        }))
        .layer(from_fn_with_state(state.clone(), request_id::middleware))
        // Outermost: a deployment's host never reaches the API.
        .layer(from_fn_with_state(
            state.clone(),
            crate::router::route_by_host,
        ))
        .with_state(state)
}

// The fallbacks read the body they refuse, so the connection stays usable
// for the client's next request (an unread body makes the server close it).
async fn not_found(_: axum::body::Bytes) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

async fn method_not_allowed(_: axum::body::Bytes) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this route does not support that method",
    )
}

/// `{"data": value}` with a status.
pub fn data<T: Serialize>(status: StatusCode, value: T) -> Response {
    (status, axum::Json(mds_api_types::Data { data: value })).into_response()
}

/// `{"data": [..], "page": {..}}`.
pub fn list<T: Serialize>(items: Vec<T>, page: u32, page_size: u32, total: u64) -> Response {
    axum::Json(mds_api_types::List {
        data: items,
        page: mds_api_types::Page {
            page,
            page_size,
            total,
        },
    })
    .into_response()
}

/// A whole list, unpaged: page 1 holding every item.
pub fn list_all<T: Serialize>(items: Vec<T>) -> Response {
    let total = items.len() as u64;
    list(items, 1, total.max(1) as u32, total)
}

/// `{"data": {"id": .., "deleted": true}}`
pub fn deleted(id: &str) -> Response {
    data(
        StatusCode::OK,
        mds_api_types::services::Deleted {
            id: id.to_string(),
            deleted: true,
        },
    )
}
