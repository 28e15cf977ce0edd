//! Extractors whose rejections speak the MIOSA error envelope.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body. Unknown fields are ignored; a wrong type names its field;
/// an empty body reads as `{}` so that bodies of optional fields may be
/// omitted.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(request, state.server().max_body_bytes).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// How much of an oversized body is read and thrown away so that the
/// client, still sending, gets to read our 413 instead of a reset
/// connection. Past this, the connection is simply closed.
const DRAIN_FACTOR: usize = 16;

/// The request body, at most `limit` bytes; a larger one is a 413.
pub async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let drain_cap = limit.saturating_mul(DRAIN_FACTOR);
    if declared.is_some_and(|n| n > drain_cap) {
        return Err(ApiError::too_large(limit));
    }
    let mut stream = request.into_body().into_data_stream();
    let mut buffer = BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "INVALID_BODY",
                format!("could not read the request body: {e}"),
            )
        })?;
        seen += chunk.len();
        if seen <= limit {
            buffer.extend_from_slice(&chunk);
        } else if seen > drain_cap {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::too_large(limit));
    }
    Ok(buffer.freeze())
}

/// Puts a body that was read back into a request.
pub fn with_body(parts: axum::http::request::Parts, body: Bytes) -> Request {
    Request::from_parts(parts, Body::from(body))
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(
                "INVALID_JSON",
                format!("the body is not valid JSON: {inner}"),
            )
        } else if path.is_empty() || path == "." {
            ApiError::invalid_field("body", inner.to_string())
        } else {
            ApiError::invalid_field(&path, inner.to_string())
        }
    })
}

/// Path parameters; a malformed one (bad percent-encoding) is a 400.
pub struct PathParams<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParams(p.0))
            .map_err(|e| ApiError::bad_request("INVALID_PATH", e.body_text()))
    }
}

/// Query parameters; malformed ones name themselves in a 422.
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| QueryParams(q.0))
            .map_err(|e| ApiError::invalid_field("query", e.body_text()))
    }
}

/// `true`/`false` as httpx and curl users write them.
pub fn parse_bool(field: &str, raw: Option<&str>) -> Result<bool, ApiError> {
    match raw.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(other) => Err(ApiError::invalid_field(
            field,
            format!("must be true or false, got {other:?}"),
        )),
    }
}

/// `?page=&page_size=`: pages count from 1; at most 100 per page.
pub struct Paging {
    pub page: u32,
    pub page_size: u32,
}

pub const MAX_PAGE_SIZE: u32 = 100;
const DEFAULT_PAGE_SIZE: u32 = 50;

impl Paging {
    pub fn parse(page: Option<&str>, page_size: Option<&str>) -> Result<Self, ApiError> {
        let number = |field: &str, raw: Option<&str>, default: u32, max: u32| match raw {
            None | Some("") => Ok(default),
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::invalid_field(
                    field,
                    format!("must be a whole number from 1 to {max}, got {text:?}"),
                )),
            },
        };
        Ok(Self {
            page: number("page", page, 1, 1_000_000)?,
            page_size: number("page_size", page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
        })
    }

    pub fn offset(&self) -> i64 {
        (self.page as i64 - 1) * self.page_size as i64
    }
}

/// `?env=` (or `?environment=`), and `?reveal=`.
#[derive(Deserialize)]
pub struct EnvQuery {
    env: Option<String>,
    environment: Option<String>,
    pub reveal: Option<String>,
}

impl EnvQuery {
    pub fn environment(&self) -> Option<&str> {
        self.env.as_deref().or(self.environment.as_deref())
    }

    /// Names the environment when the query did not (a body's `env`).
    pub fn set_environment(&mut self, environment: Option<String>) {
        self.environment = environment;
    }
}
