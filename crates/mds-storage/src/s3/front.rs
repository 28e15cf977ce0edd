//! What the S3 endpoint does around s3s, on the raw HTTP request and
//! response: a request id on every answer (header and error body), a SigV4
//! request dated by `Date` instead of `X-Amz-Date`, presigned URLs (SigV4
//! or SigV2) expired or meant to live past S3's week, and a CORS preflight
//! without an `Origin`.

use std::future::Future;
use std::pin::Pin;

use http::{HeaderValue, Method, StatusCode};
use s3s::service::S3Service;
use s3s::{Body, HttpError, HttpRequest, HttpResponse, S3Error, S3ErrorCode};

/// S3's limit for a presigned URL: seven days.
const MAX_EXPIRES_SECS: i64 = 604_800;

/// The service `serve` runs: s3s behind the fixes above.
#[derive(Clone)]
pub(super) struct Front(pub(super) S3Service);

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Front {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let request_id = request_id();
            let mut req = req.map(Body::from);
            let answer = match refuse(&req) {
                Some(err) => err
                    .to_http_response()
                    .map_err(|e| HttpError::new(Box::new(e))),
                None => {
                    date_as_amz_date(&mut req);
                    inner.call(req).await
                }
            };
            answer.map(|resp| with_request_id(resp, &request_id))
        })
    }
}

/// 16 random hex digits, as S3's request ids look.
fn request_id() -> String {
    format!("{:016X}", rand::random::<u64>())
}

/// The answer S3 gives before authentication that s3s does not.
fn refuse(req: &HttpRequest) -> Option<S3Error> {
    if req.method() == Method::OPTIONS && !req.headers().contains_key(http::header::ORIGIN) {
        let mut err = S3Error::with_message(
            S3ErrorCode::Custom("BadRequest".into()),
            "Insufficient information. Origin request header needed.",
        );
        err.set_status_code(StatusCode::BAD_REQUEST);
        return Some(err);
    }
    let query = url::form_urlencoded::parse(req.uri().query()?.as_bytes());
    let mut v4_expires = None;
    let mut v2_expires = None;
    for (name, value) in query {
        match &*name {
            "X-Amz-Expires" => v4_expires = Some(value.into_owned()),
            "Expires" => v2_expires = Some(value.into_owned()),
            _ => {}
        }
    }
    // Seconds from now until the URL expires: SigV4 counts from its
    // X-Amz-Date (s3s checks that), SigV2 gives an instant.
    let left = match (v4_expires, v2_expires) {
        (Some(secs), _) => secs.parse::<i64>().ok()?,
        (None, Some(at)) => at.parse::<i64>().ok()? - chrono::Utc::now().timestamp(),
        (None, None) => return None,
    };
    // s3s takes a SigV4 expiry of 0..=u32::MAX and answers 400 to the
    // rest, and 400 to an expired SigV2 URL; S3 refuses both, and a URL
    // meant to live longer than a week, as it refuses an expired URL.
    if left < 0 {
        return Some(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "Request has expired",
        ));
    }
    (left > MAX_EXPIRES_SECS).then(|| {
        S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "a presigned URL expires within a week (604800 seconds)",
        )
    })
}

/// A SigV4 request may be dated by `Date` alone (S3 takes it); s3s wants
/// `X-Amz-Date`, so the same instant is given to it in that form. The
/// signature still covers the headers the client signed.
fn date_as_amz_date(req: &mut HttpRequest) {
    let headers = req.headers_mut();
    let sigv4 = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256"));
    let has_amz_date = headers
        .get("x-amz-date")
        .is_some_and(|v| !v.as_bytes().is_empty());
    if !sigv4 || has_amz_date {
        return;
    }
    let date = headers
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v.trim()).ok());
    if let Some(date) = date {
        let amz = date.with_timezone(&chrono::Utc).format("%Y%m%dT%H%M%SZ");
        if let Ok(value) = HeaderValue::from_str(&amz.to_string()) {
            headers.insert("x-amz-date", value);
        }
    }
}

/// `resp` with `x-amz-request-id`, and the id in its error body: s3s's
/// error bodies carry none.
fn with_request_id(mut resp: HttpResponse, id: &str) -> HttpResponse {
    if let Ok(value) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-amz-request-id", value);
    }
    if !(resp.status().is_client_error() || resp.status().is_server_error()) {
        return resp;
    }
    let Some(body) = resp.body().bytes() else {
        return resp;
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return resp;
    };
    if text.contains("<RequestId>") || !text.contains("</Error>") {
        return resp;
    }
    let text = text.replacen(
        "</Error>",
        &format!("<RequestId>{id}</RequestId></Error>"),
        1,
    );
    if let Ok(len) = HeaderValue::from_str(&text.len().to_string()) {
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, len);
    }
    *resp.body_mut() = Body::from(text);
    resp
}
