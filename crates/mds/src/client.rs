//! A small blocking client for the mds API.

use std::path::Path;

use anyhow::{anyhow, Context};
use mds_api_types::ErrorEnvelope;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::Global;

pub struct ApiClient {
    http: Client,
    base: String,
    api_key: String,
}

/// An error the API answered with, kept whole for the message.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub request_id: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} {}", self.message, self.status, self.code)?;
        if !self.request_id.is_empty() {
            write!(f, ", request {}", self.request_id)?;
        }
        write!(f, ")")?;
        let hint = match (self.status, self.code.as_str()) {
            (401, _) => "\nhint: check --api-key or MIOSA_API_KEY (the admin key is in DIR/admin-api-key)",
            (403, _) => "\nhint: this key lacks a scope; use a key that has it (mds keys create --scope ...)",
            (503, _) => "\nhint: mds is starting or its database is restarting; try again in a moment",
            _ => "",
        };
        f.write_str(hint)
    }
}

impl std::error::Error for ApiFailure {}

/// Like the SDK: a base without a `/vN` suffix gets `/api/v1`.
pub fn normalize_base_url(raw: &str) -> String {
    let trimmed = raw.trim().trim_end_matches('/');
    let has_version = trimmed
        .rsplit('/')
        .next()
        .and_then(|last| last.strip_prefix('v'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if has_version {
        trimmed.to_string()
    } else {
        format!("{trimmed}/api/v1")
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ApiClient {
    pub fn from_global(global: &Global) -> anyhow::Result<Self> {
        let server = global
            .server
            .clone()
            .or_else(|| env("MIOSA_BASE_URL"))
            .or_else(|| {
                let info = read_trimmed(&global.data_dir.join(mds_server::SERVER_INFO_FILE))?;
                let info: mds_api_types::ServerInfo = serde_json::from_str(&info).ok()?;
                Some(info.url)
            })
            .unwrap_or_else(|| "http://127.0.0.1:7070".to_string());
        let api_key = global
            .api_key
            .clone()
            .or_else(|| env("MIOSA_API_KEY"))
            .or_else(|| env("MIOSA_ACCESS_TOKEN"))
            .or_else(|| env("MDS_ADMIN_API_KEY"))
            .or_else(|| read_trimmed(&global.data_dir.join(mds_server::ADMIN_KEY_FILE)))
            .ok_or_else(|| {
                anyhow!(
                    "no API key: pass --api-key, set MIOSA_API_KEY, or run where the data dir \
                     ({}) holds admin-api-key",
                    global.data_dir.display()
                )
            })?;
        Ok(Self {
            http: Client::builder()
                .user_agent(concat!("mds-cli/", env!("CARGO_PKG_VERSION")))
                .build()?,
            base: normalize_base_url(&server),
            api_key,
        })
    }

    /// A request outside the API's version prefix (`/healthz`).
    pub fn request_root(&self, method: Method, path: &str) -> RequestBuilder {
        let root = self
            .base
            .rsplit_once('/')
            .and_then(|(rest, _version)| rest.strip_suffix("/api"))
            .unwrap_or(&self.base);
        self.http.request(method, format!("{root}{path}"))
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
    }

    /// Sends `builder`; a non-2xx answer becomes an error that names the
    /// server's code, message and request id.
    pub fn send_raw(&self, builder: RequestBuilder) -> anyhow::Result<Response> {
        let response = builder.send().map_err(|e| {
            if e.is_connect() {
                anyhow!(
                    "cannot reach mds at {}: is it running? (start it with `mds up`)",
                    self.base
                )
            } else {
                anyhow!("request to {} failed: {e}", self.base)
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().context("reading the response")?;
        let failure = match serde_json::from_str::<ErrorEnvelope>(&text) {
            Ok(envelope) => ApiFailure {
                status: status.as_u16(),
                code: envelope.error.code,
                message: envelope.error.message,
                request_id: if envelope.error.request_id.is_empty() {
                    request_id
                } else {
                    envelope.error.request_id
                },
            },
            Err(_) => ApiFailure {
                status: status.as_u16(),
                code: "HTTP_ERROR".into(),
                message: text.chars().take(500).collect(),
                request_id,
            },
        };
        Err(failure.into())
    }

    fn send(&self, builder: RequestBuilder) -> anyhow::Result<Value> {
        let text = self
            .send_raw(builder)?
            .text()
            .context("reading the response")?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("the server's answer is not JSON")
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(Method::GET, path))
    }

    pub fn get_query(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        self.send(self.request(Method::GET, path).query(query))
    }

    pub fn post<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<Value> {
        self.send(self.request(Method::POST, path).json(body))
    }

    /// `method` with a query and a JSON body.
    pub fn send_json<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: &B,
    ) -> anyhow::Result<Value> {
        self.send(self.request(method, path).query(query).json(body))
    }

    pub fn put<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<Value> {
        self.send(self.request(Method::PUT, path).json(body))
    }

    pub fn delete_query(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        self.send(self.request(Method::DELETE, path).query(query))
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.delete_query(path, &[])
    }
}

/// `value["data"]` decoded as `T`.
pub fn data<T: DeserializeOwned>(value: Value) -> anyhow::Result<T> {
    let data = value
        .get("data")
        .cloned()
        .ok_or_else(|| anyhow!("the answer has no \"data\""))?;
    serde_json::from_value(data).context("unexpected answer shape")
}

/// A path segment, percent-encoded (environment names hold `/`).
pub fn segment(s: &str) -> String {
    mds_core::env::url_encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised_like_the_sdk() {
        for (raw, base) in [
            ("http://localhost:7070", "http://localhost:7070/api/v1"),
            ("http://localhost:7070/", "http://localhost:7070/api/v1"),
            ("http://h/v1", "http://h/v1"),
            ("http://h/api/v1/", "http://h/api/v1"),
            ("http://h/vx", "http://h/vx/api/v1"),
        ] {
            assert_eq!(normalize_base_url(raw), base, "{raw}");
        }
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("preview/pr-42"), "preview%2Fpr-42");
        assert_eq!(segment("my-app"), "my-app");
    }
}
