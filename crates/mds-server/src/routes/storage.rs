//! The MIOSA storage API: buckets, objects, presigned URLs.
//!
//! Object reads and writes sit outside the bearer middleware, because a
//! presigned URL (or, for GET, a public bucket) opens them without a key;
//! each handler decides which of the three applies.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mds_api_types::services::{BucketList, DeletedObject};
use mds_api_types::{
    Bucket, BucketCredentials, CreateBucket, ObjectList, PresignRequest, Presigned, StorageObject,
    UpdateBucket,
};
use mds_core::ids::IdKind;
use mds_storage::{presign, BucketRow, Storage, StorageError};
use mds_store::ObjectRow;
use serde::Deserialize;
use serde_json::json;

use super::{data, deleted};
use crate::audit::revealed;
use crate::auth::{self, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_bool, JsonBody, PathParams, QueryParams};
use crate::state::AppState;
use mds_control::attach::{attach, remove_service, wait_settled, KindOptions};
use mds_control::projects::{load_project, resolve_environment};
use mds_control::standalone;
use mds_core::kinds::ServiceKind;

/// S3's most keys per list call.
const MAX_KEYS: i64 = 1000;
/// Longest presigned URL lifetime: 7 days, as S3.
const MAX_PRESIGN_SECS: i64 = 7 * 24 * 3600;

pub async fn bucket_json(storage: &Storage, row: &BucketRow) -> ApiResult<Bucket> {
    let (object_count, size_bytes) = storage.store().bucket_usage(&row.id).await?;
    Ok(Bucket {
        id: row.id.clone(),
        name: row.name.clone(),
        project_id: row.project_id.clone(),
        environment: row.environment.clone(),
        visibility: row.visibility.clone(),
        public: row.is_public(),
        region: row.region.clone(),
        object_count,
        size_bytes,
        created_at: row.created_at,
        credentials: None,
    })
}

fn object_json(row: &ObjectRow) -> StorageObject {
    StorageObject {
        key: row.key.clone(),
        size: row.size,
        content_type: row.content_type.clone(),
        etag: row.etag.clone(),
        last_modified: row.last_modified,
    }
}

/// A bucket by id (`bkt_...`) or name.
pub async fn load_bucket(storage: &Storage, reference: &str) -> ApiResult<BucketRow> {
    let row = if IdKind::Bucket.matches(reference) {
        storage.store().bucket(reference).await?
    } else {
        storage.store().bucket_by_name(reference).await?
    };
    row.ok_or_else(|| ApiError::not_found("bucket", reference))
}

fn visibility(visibility: Option<String>, public: Option<bool>) -> ApiResult<Option<String>> {
    match (visibility.as_deref(), public) {
        (Some(v @ ("public" | "private")), _) => Ok(Some(v.to_string())),
        (Some(other), _) => Err(ApiError::invalid_field(
            "visibility",
            format!("must be \"public\" or \"private\", got {other:?}"),
        )),
        (None, Some(true)) => Ok(Some("public".to_string())),
        (None, Some(false)) => Ok(Some("private".to_string())),
        (None, None) => Ok(None),
    }
}

#[derive(Deserialize)]
pub struct BucketQuery {
    project_id: Option<String>,
    project: Option<String>,
    force: Option<String>,
}

pub async fn list_buckets(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<BucketQuery>,
) -> ApiResult<Response> {
    principal.require("storage:read")?;
    let storage = state.storage()?;
    let project = match query.project_id.or(query.project) {
        Some(reference) => Some(load_project(state.store()?, &principal, &reference).await?),
        None => None,
    };
    let rows = storage
        .store()
        .buckets(project.as_ref().map(|p| p.id.as_str()))
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(bucket_json(storage, row).await?);
    }
    Ok(axum::Json(BucketList {
        buckets: items.clone(),
        data: items,
    })
    .into_response())
}

/// A bucket is a storage service with a name of the client's choosing:
/// standalone without a project, else the storage service of the
/// project's environment (`environment`, else the default one). Its own S3
/// key pair comes back once, in this answer.
pub async fn create_bucket(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(input): JsonBody<CreateBucket>,
) -> ApiResult<Response> {
    principal.require("storage:write")?;
    let storage = state.storage()?;
    let name = input.name.ok_or_else(|| ApiError::missing_field("name"))?;
    mds_storage::check_bucket_name(&name).map_err(|e| ApiError::invalid_field("name", e))?;
    if input.region.as_deref().is_some_and(|r| r != "us-east-1") {
        return Err(ApiError::invalid_field(
            "region",
            "this server has one region, \"us-east-1\"",
        ));
    }
    let visibility = visibility(input.visibility, input.public)?.unwrap_or("private".into());
    if storage.store().bucket_by_name(&name).await?.is_some() {
        return Err(bucket_taken(&name));
    }
    let options = KindOptions {
        bucket: Some(name.clone()),
        ..KindOptions::default()
    };
    let service_name = bucket_service_name(&name);
    let service = match input.project_id {
        Some(reference) => {
            let store = state.store()?;
            let project = load_project(store, &principal, &reference).await?;
            // One bucket is one environment's: the default unless named.
            let env = resolve_environment(store, &project, input.environment.as_deref()).await?;
            // Always a service of its own: never another's, bound here too.
            let existing = store.data_services(&project.id).await?;
            if existing
                .iter()
                .any(|s| s.name.eq_ignore_ascii_case(&service_name))
            {
                return Err(ApiError::conflict(
                    "DATA_SERVICE_NAME_TAKEN",
                    format!("this project already has a service named {service_name:?}"),
                ));
            }
            attach(
                state.control(),
                &project,
                ServiceKind::Storage,
                Some(service_name),
                Some(&env.id),
                &options,
            )
            .await?
        }
        None if input.environment.is_some() => {
            return Err(ApiError::invalid_field(
                "environment",
                "names an environment of a project: give project_id as well",
            ))
        }
        None => {
            standalone::create(
                state.control(),
                &principal,
                ServiceKind::Storage,
                Some(service_name),
                &options,
            )
            .await?
        }
    };
    wait_settled(state.control(), &service.id).await?;
    // The bucket our own binding made; none when another request took the
    // name first (or provisioning failed): then our service goes.
    let mut made = None;
    for binding in state.store()?.bindings(&service.id).await? {
        made = made.or(storage.store().binding_bucket(&binding.id).await?);
    }
    let Some(mut row) = made else {
        remove_service(state.control(), &service).await?;
        return Err(bucket_taken(&name));
    };
    if visibility != row.visibility {
        storage
            .store()
            .set_bucket_visibility(&row.id, &visibility)
            .await?;
        row.visibility = visibility;
    }
    let mut bucket = bucket_json(storage, &row).await?;
    bucket.credentials = Some(bucket_credentials(&state, &principal, &row).await?);
    Ok(data(StatusCode::CREATED, bucket))
}

/// The storage service a bucket makes is named after it, as service names
/// allow (no dots, at most 48 characters); its injected names follow.
fn bucket_service_name(bucket: &str) -> String {
    let mut name = bucket.replace('.', "-");
    name.truncate(48);
    name.trim_end_matches('-').to_string()
}

fn bucket_taken(name: &str) -> ApiError {
    ApiError::conflict(
        "BUCKET_ALREADY_EXISTS",
        format!("a bucket named {name:?} already exists; bucket names are unique on the server"),
    )
}

/// The S3 key pair of the storage binding that owns `row`.
async fn bucket_credentials(
    state: &AppState,
    principal: &Principal,
    row: &BucketRow,
) -> ApiResult<BucketCredentials> {
    let store = state.store()?;
    let binding_id = row.binding_id.as_deref().ok_or_else(|| {
        ApiError::conflict(
            "BUCKET_HAS_NO_KEYS",
            "this bucket was made over S3 with the admin key and has no key pair of its own",
        )
    })?;
    let (service, binding) = store
        .binding_with_service(binding_id)
        .await?
        .ok_or_else(|| ApiError::not_found("bucket", &row.name))?;
    // The caller's own (a binding names no tenant).
    store
        .data_service(&principal.tenant_id, &service.id)
        .await?
        .ok_or_else(|| ApiError::not_found("bucket", &row.name))?;
    let reconciler = state.reconciler()?;
    let endpoint = reconciler
        .binding_variables(&service, &binding)
        .map_err(ApiError::internal)?
        .into_iter()
        .find(|(name, _, _)| name.ends_with("STORAGE_ENDPOINT"))
        .map(|(_, value, _)| value)
        .unwrap_or_default();
    let secret = reconciler.password(&binding).map_err(ApiError::internal)?;
    Ok(BucketCredentials {
        bucket: row.name.clone(),
        endpoint,
        region: row.region.clone(),
        access_key_id: mds_provision::storage_access_key_id(
            &binding.id,
            binding.credential_generation,
        ),
        secret_access_key: secret.to_string(),
    })
}

/// A bucket's own S3 key pair (it opens that bucket only).
pub async fn get_bucket_credentials(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(reference): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("storage:read")?;
    // The pair writes too: a key that only reads must not gain that.
    principal.require("storage:write")?;
    let storage = state.storage()?;
    let row = load_bucket(storage, &reference).await?;
    let credentials = bucket_credentials(&state, &principal, &row).await?;
    tracing::info!(key = %principal.key_id, bucket = row.id, "bucket credentials revealed");
    Ok(revealed(
        data(StatusCode::OK, credentials),
        None,
        [format!("the S3 key pair of bucket {}", row.id)],
    ))
}

pub async fn get_bucket(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(reference): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("storage:read")?;
    let storage = state.storage()?;
    let row = load_bucket(storage, &reference).await?;
    Ok(data(StatusCode::OK, bucket_json(storage, &row).await?))
}

pub async fn update_bucket(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(reference): PathParams<String>,
    JsonBody(input): JsonBody<UpdateBucket>,
) -> ApiResult<Response> {
    principal.require("storage:write")?;
    let storage = state.storage()?;
    let mut row = load_bucket(storage, &reference).await?;
    if let Some(visibility) = visibility(input.visibility, input.public)? {
        storage
            .store()
            .set_bucket_visibility(&row.id, &visibility)
            .await?;
        row.visibility = visibility;
    }
    Ok(data(StatusCode::OK, bucket_json(storage, &row).await?))
}

pub async fn delete_bucket(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(reference): PathParams<String>,
    QueryParams(query): QueryParams<BucketQuery>,
) -> ApiResult<Response> {
    principal.require("storage:write")?;
    let storage = state.storage()?;
    let row = load_bucket(storage, &reference).await?;
    let force = parse_bool("force", query.force.as_deref())?;
    let Some(binding_id) = &row.binding_id else {
        storage.delete_bucket(&row, force).await?;
        return Ok(deleted(&row.id));
    };
    // A bucket made with this API is its storage service: deleting one
    // deletes the other. A bucket an attach made goes with its service.
    let owner = state.store()?.binding_with_service(binding_id).await?;
    let Some((service, _)) = owner.filter(|(s, _)| s.config["bucket"] == row.name.as_str()) else {
        return Err(ApiError::conflict(
            "BUCKET_ATTACHED",
            format!(
                "bucket {:?} belongs to an attached storage service; delete that service to \
                 delete its buckets",
                row.name
            ),
        ));
    };
    // The caller's own (a binding names no tenant).
    let service = state
        .store()?
        .data_service(&principal.tenant_id, &service.id)
        .await?
        .ok_or_else(|| ApiError::not_found("bucket", &reference))?;
    let (objects, _) = storage.store().bucket_usage(&row.id).await?;
    if objects > 0 && !force {
        return Err(StorageError::BucketNotEmpty.into());
    }
    remove_service(state.control(), &service).await?;
    // Gone when this answers, as for a bucket of no service.
    wait_settled(state.control(), &service.id).await?;
    Ok(deleted(&row.id))
}

#[derive(Deserialize)]
pub struct ListQuery {
    prefix: Option<String>,
    max_keys: Option<String>,
    limit: Option<String>,
    marker: Option<String>,
    cursor: Option<String>,
}

pub async fn list_objects(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(reference): PathParams<String>,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Response> {
    principal.require("storage:read")?;
    let storage = state.storage()?;
    let bucket = load_bucket(storage, &reference).await?;
    let max_keys = match query.max_keys.or(query.limit).as_deref() {
        None | Some("") => MAX_KEYS,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (0..=MAX_KEYS).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid_field(
                    "max_keys",
                    format!("must be a whole number from 0 to {MAX_KEYS}, got {raw:?}"),
                ))
            }
        },
    };
    let prefix = query.prefix.unwrap_or_default();
    let after = query.marker.or(query.cursor).unwrap_or_default();
    let mut rows = storage
        .store()
        .list_objects(&bucket.id, &prefix, &after, max_keys + 1)
        .await?;
    let is_truncated = rows.len() as i64 > max_keys;
    rows.truncate(max_keys as usize);
    let next_marker = is_truncated
        .then(|| rows.last().map(|r| r.key.clone()))
        .flatten();
    Ok(axum::Json(ObjectList {
        data: rows.iter().map(object_json).collect(),
        prefix,
        max_keys,
        is_truncated,
        next_marker,
    })
    .into_response())
}

#[derive(Deserialize)]
pub struct ObjectPath {
    bucket: String,
    key: String,
}

#[derive(Deserialize, Default)]
pub struct ObjectQuery {
    #[serde(rename = "X-Mds-Expires")]
    expires: Option<String>,
    #[serde(rename = "X-Mds-Signature")]
    signature: Option<String>,
}

/// Who may touch this object: a bearer key with `scope`, a presigned URL
/// for this method and key, or (reads only) anyone, on a public bucket.
async fn authorize_object(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    bucket: &BucketRow,
    key: &str,
    query: &ObjectQuery,
    scope: &str,
) -> ApiResult<()> {
    if headers.contains_key(header::AUTHORIZATION) {
        let principal = auth::principal_from_headers(state, headers).await?;
        return Ok(principal.require(scope)?);
    }
    if let (Some(expires), Some(signature)) = (&query.expires, &query.signature) {
        let expires: i64 = expires
            .parse()
            .map_err(|_| presign_denied("malformed expiry"))?;
        // A URL presigned for GET also answers HEAD.
        let signed_method = if method == Method::HEAD {
            "GET"
        } else {
            method.as_str()
        };
        return state
            .storage()?
            .presigner()
            .check(
                signed_method,
                &bucket.id,
                key,
                expires,
                signature,
                chrono::Utc::now().timestamp(),
            )
            .map_err(presign_denied);
    }
    if bucket.is_public() && (method == Method::GET || method == Method::HEAD) {
        return Ok(());
    }
    Err(ApiError::invalid_token(
        "missing API key: send Authorization: Bearer msk_... or use a presigned URL",
    ))
}

fn presign_denied(why: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "SIGNATURE_INVALID", why)
}

fn object_headers(row: &ObjectRow) -> Vec<(header::HeaderName, String)> {
    vec![
        (header::CONTENT_TYPE, row.content_type.clone()),
        (header::ETAG, format!("\"{}\"", row.etag)),
        (
            header::LAST_MODIFIED,
            row.last_modified
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string(),
        ),
        (header::ACCEPT_RANGES, "bytes".to_string()),
    ]
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` for an object of `size` bytes.
pub fn parse_range(raw: &str, size: u64) -> Option<(u64, u64)> {
    let spec = raw.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let last = size.checked_sub(1)?;
    match (start.trim(), end.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (n > 0).then(|| (size.saturating_sub(n), last))
        }
        (a, "") => Some((a.parse().ok()?, last)),
        (a, b) => Some((a.parse().ok()?, b.parse::<u64>().ok()?.min(last))),
    }
}

pub async fn get_object(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    PathParams(path): PathParams<ObjectPath>,
    QueryParams(query): QueryParams<ObjectQuery>,
) -> ApiResult<Response> {
    let storage = state.storage()?;
    let bucket = load_bucket(storage, &path.bucket).await?;
    authorize_object(
        &state,
        &headers,
        &method,
        &bucket,
        &path.key,
        &query,
        "storage:read",
    )
    .await?;
    let object = storage
        .object(&bucket, &path.key)
        .await
        .map_err(|e| match e {
            StorageError::NoSuchKey => ApiError::not_found("object", &path.key),
            other => other.into(),
        })?;
    // Its bytes at rest are ciphertext, and an SSE-C key never reaches
    // this API: such an object is read over S3, with its key.
    if mds_storage::s3::is_sealed(&object) {
        return Err(ApiError::conflict(
            "OBJECT_ENCRYPTED",
            format!(
                "{:?} is stored with server-side encryption; read it over the S3 endpoint \
                 (with its customer key, for SSE-C)",
                path.key
            ),
        ));
    }
    let range = requested_range(&headers, object.size as u64)?;
    let (status, length) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, end - start + 1),
        None => (StatusCode::OK, object.size as u64),
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(storage.read(&object, range).await?)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let out = response.headers_mut();
    for (name, value) in object_headers(&object) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    }
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some((start, end)) = range {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{}", object.size)) {
            out.insert(header::CONTENT_RANGE, value);
        }
    }
    allow_any_origin(&mut response);
    Ok(response)
}

/// The byte range (inclusive) a `Range` header asks of an object of `size`
/// bytes, if any; 416 when it cannot be served.
fn requested_range(headers: &HeaderMap, size: u64) -> ApiResult<Option<(u64, u64)>> {
    let unsatisfiable = |raw: &str| {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "INVALID_RANGE",
            format!("range {raw:?} is not satisfiable for {size} bytes"),
        )
    };
    let Some(raw) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    match parse_range(raw, size) {
        Some((start, end)) if start <= end && end < size => Ok(Some((start, end))),
        _ => Err(unsatisfiable(raw)),
    }
}

/// The body as a byte stream for the blob layer.
pub fn body_stream(body: Body) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin {
    body.into_data_stream()
        .map(|piece| piece.map_err(std::io::Error::other))
}

/// Reads and discards what is left of an oversized body (up to a bound),
/// so that the client reads our 413 rather than a reset connection.
pub async fn drain(mut body: impl Stream<Item = std::io::Result<Bytes>> + Unpin) {
    let mut left: usize = 64 << 20;
    while let Some(Ok(piece)) = body.next().await {
        left = left.saturating_sub(piece.len());
        if left == 0 {
            break;
        }
    }
}

pub async fn put_object(
    State(state): State<AppState>,
    PathParams(path): PathParams<ObjectPath>,
    QueryParams(query): QueryParams<ObjectQuery>,
    request: Request,
) -> ApiResult<Response> {
    let storage = state.storage()?;
    let bucket = load_bucket(storage, &path.bucket).await?;
    let (parts, body) = request.into_parts();
    authorize_object(
        &state,
        &parts.headers,
        &parts.method,
        &bucket,
        &path.key,
        &query,
        "storage:write",
    )
    .await?;
    mds_storage::check_key(&path.key).map_err(|e| ApiError::invalid_field("key", e.to_string()))?;
    let limit = storage.config().max_object_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body_stream(body);
    if declared.is_some_and(|n| n > limit) {
        drain(stream).await;
        return Err(StorageError::TooLarge { limit }.into());
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let result = storage
        .put_object(&bucket, &path.key, &content_type, &mut stream, |_| {
            Ok(json!({}))
        })
        .await;
    let row = match result {
        Err(e @ StorageError::TooLarge { .. }) => {
            drain(stream).await;
            return Err(e.into());
        }
        other => other?,
    };
    let mut response = data(StatusCode::OK, object_json(&row));
    allow_any_origin(&mut response);
    Ok(response)
}

/// Object reads and writes open to browsers on any origin: they carry
/// their authority in the URL (presigned) or need none (public), never in
/// cookies, so any page may use a URL it was handed.
fn allow_any_origin(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("etag, content-length, content-range, x-request-id"),
    );
}

/// The CORS preflight a browser sends before a presigned PUT.
pub async fn preflight(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    allow_any_origin(&mut response);
    let out = response.headers_mut();
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT"),
    );
    let requested = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("content-type"));
    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

pub async fn delete_object(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<ObjectPath>,
) -> ApiResult<Response> {
    principal.require("storage:write")?;
    let storage = state.storage()?;
    let bucket = load_bucket(storage, &path.bucket).await?;
    if !storage.delete_object(&bucket, &path.key).await? {
        return Err(ApiError::not_found("object", &path.key));
    }
    Ok(data(
        StatusCode::OK,
        DeletedObject {
            key: path.key,
            deleted: true,
        },
    ))
}

/// Where clients reached us: the Host they used.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

pub async fn presign(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    PathParams(reference): PathParams<String>,
    JsonBody(input): JsonBody<PresignRequest>,
) -> ApiResult<Response> {
    let storage = state.storage()?;
    let bucket = load_bucket(storage, &reference).await?;
    let key = input.key.ok_or_else(|| ApiError::missing_field("key"))?;
    mds_storage::check_key(&key).map_err(|e| ApiError::invalid_field("key", e.to_string()))?;
    let method = match input
        .method
        .or(input.operation)
        .unwrap_or_else(|| "GET".into())
        .to_ascii_uppercase()
        .as_str()
    {
        "GET" | "DOWNLOAD" | "READ" => "GET",
        "PUT" | "UPLOAD" | "WRITE" => "PUT",
        other => {
            return Err(ApiError::invalid_field(
                "method",
                format!("must be GET or PUT, got {other:?}"),
            ))
        }
    };
    principal.require(if method == "GET" {
        "storage:read"
    } else {
        "storage:write"
    })?;
    let expires_in = input.expires_in.or(input.expires_in_sec).unwrap_or(300);
    if !(1..=MAX_PRESIGN_SECS).contains(&expires_in) {
        return Err(ApiError::invalid_field(
            "expires_in",
            format!("must be from 1 to {MAX_PRESIGN_SECS} seconds"),
        ));
    }
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(expires_in);
    let expires = expires_at.timestamp();
    let signature = storage.presigner().sign(method, &bucket.id, &key, expires);
    let url = format!(
        "{}/api/v1/storage/buckets/{}/objects/{}?{}={expires}&{}={signature}",
        base_url(&headers),
        bucket.id,
        mds_core::env::url_encode_path(&key),
        presign::EXPIRES,
        presign::SIGNATURE,
    );
    Ok(data(
        StatusCode::OK,
        Presigned {
            presigned_url: url.clone(),
            url,
            method: method.to_string(),
            key,
            expires_at,
            expires_in,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=0-1000", 100), Some((0, 99)));
        assert_eq!(parse_range("bytes=-0", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
    }
}
