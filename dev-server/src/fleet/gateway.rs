//! API Gateway's part: a request becomes the REST API proxy event (version 1.0) that template.yaml's routes
//! produce, and the function's answer becomes the HTTP response (buffered proxy responses, or the streamed
//! HTTP integration format), with the gateway responses template.yaml configures for what never reached a
//! function or failed in it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use super::instances::{Answer, Failure};
use super::template::{Route, match_resource};

/// API Gateway's limit on a request payload (10 MB).
pub const REQUEST_MAX_BYTES: usize = 10 * 1024 * 1024;

/// The route a request takes, with its path parameters.
pub fn route<'a>(routes: &'a [Route], method: &Method, path: &str) -> Option<(&'a Route, BTreeMap<String, String>)> {
    routes
        .iter()
        .filter(|r| r.method == method.as_str() || r.method == "ANY")
        .find_map(|r| match_resource(&r.resource, path).map(|params| (r, params)))
}

/// The request as the REST API hands it to a Lambda proxy integration.
pub struct Incoming<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    pub peer: SocketAddr,
    pub stage: &'a str,
}

/// The proxy event, with a new request id.
pub fn proxy_event(incoming: &Incoming<'_>, route: &Route, params: &BTreeMap<String, String>) -> Value {
    let mut headers = serde_json::Map::new();
    let mut multi_headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in incoming.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.insert(name.as_str().to_owned(), Value::String(value.clone()));
        multi_headers.entry(name.as_str().to_owned()).or_default().push(value);
    }
    let mut query = serde_json::Map::new();
    let mut multi_query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(incoming.uri.query().unwrap_or("")).unwrap_or_default();
    for (name, value) in pairs {
        query.insert(name.clone(), Value::String(value.clone()));
        multi_query.entry(name).or_default().push(value);
    }
    let (body, base64) = match std::str::from_utf8(incoming.body) {
        _ if incoming.body.is_empty() => (Value::Null, false),
        Ok(text) => (Value::String(text.to_owned()), false),
        Err(_) => (Value::String(base64::engine::general_purpose::STANDARD.encode(incoming.body)), true),
    };
    let now = chrono::Utc::now();
    let path = incoming.uri.path();
    let or_null = |map: serde_json::Map<String, Value>| if map.is_empty() { Value::Null } else { Value::Object(map) };
    let user_agent = incoming.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    json!({
        "resource": route.resource,
        "path": path,
        "httpMethod": incoming.method.as_str(),
        "headers": or_null(headers),
        "multiValueHeaders": if multi_headers.is_empty() { Value::Null } else { json!(multi_headers) },
        "queryStringParameters": or_null(query),
        "multiValueQueryStringParameters": if multi_query.is_empty() { Value::Null } else { json!(multi_query) },
        "pathParameters": if params.is_empty() { Value::Null } else { json!(params) },
        "stageVariables": Value::Null,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "fleet",
            "resourceId": "fleet",
            "resourcePath": route.resource,
            "httpMethod": incoming.method.as_str(),
            "path": format!("/{}{}", incoming.stage, path),
            "protocol": "HTTP/1.1",
            "stage": incoming.stage,
            "requestId": shared::secrets::random_token(),
            "requestTime": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "requestTimeEpoch": now.timestamp_millis(),
            "identity": { "sourceIp": incoming.peer.ip().to_string(), "userAgent": user_agent },
        },
        "body": body,
        "isBase64Encoded": base64,
    })
}

/// The gateway response template.yaml configures for a path no route has (`MISSING_AUTHENTICATION_TOKEN`).
pub fn no_such_route() -> Response {
    gateway_error(StatusCode::NOT_FOUND, "invalid_request_error", "not_found", "no such route")
}

pub fn too_large() -> Response {
    gateway_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "gateway_error", "Request Too Long")
}

/// `DEFAULT_5XX`, with API Gateway's messages for a failed or timed-out integration.
pub fn failed(failure: &Failure) -> Response {
    match failure {
        Failure::TimedOut => {
            gateway_error(StatusCode::GATEWAY_TIMEOUT, "api_error", "gateway_error", "Endpoint request timed out")
        }
        _ => gateway_error(StatusCode::BAD_GATEWAY, "api_error", "gateway_error", "Internal server error"),
    }
}

fn gateway_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"type": kind, "code": code, "message": message, "param": null}});
    (status, axum::Json(body)).into_response()
}

/// The HTTP response for what a function answered.
pub fn response(answer: Answer) -> Response {
    match answer {
        Answer::Buffered(payload) => {
            buffered(&payload).unwrap_or_else(|| failed(&Failure::Function("malformed".into())))
        }
        Answer::Streaming { prelude, body } => streamed(&prelude, body),
        Answer::Failed(failure) => failed(&failure),
    }
}

/// A proxy integration's JSON answer: `statusCode`, `headers`, `multiValueHeaders`, `body`, `isBase64Encoded`.
fn buffered(payload: &[u8]) -> Option<Response> {
    let answer: Value = serde_json::from_slice(payload).ok()?;
    let status = StatusCode::from_u16(u16::try_from(answer.get("statusCode")?.as_u64()?).ok()?).ok()?;
    let body = match answer.get("body").and_then(Value::as_str) {
        None => Bytes::new(),
        Some(text) if answer.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            Bytes::from(base64::engine::general_purpose::STANDARD.decode(text).ok()?)
        }
        Some(text) => Bytes::from(text.to_owned()),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    copy_headers(headers, answer.get("headers"));
    if let Some(multi) = answer.get("multiValueHeaders").and_then(Value::as_object) {
        for (name, values) in multi {
            let Ok(name) = HeaderName::try_from(name.as_str()) else { continue };
            headers.remove(&name);
            for value in values.as_array().into_iter().flatten().filter_map(Value::as_str) {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.append(name.clone(), value);
                }
            }
        }
    }
    Some(response)
}

/// A streamed answer: the prelude's status, headers and cookies, then the body as the function writes it.
fn streamed(prelude: &[u8], body: tokio::sync::mpsc::Receiver<Bytes>) -> Response {
    let Ok(prelude) = serde_json::from_slice::<Value>(prelude) else {
        return failed(&Failure::Function("a malformed prelude".into()));
    };
    let status = prelude
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|chunk| (Ok::<Bytes, std::io::Error>(chunk), body))
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    copy_headers(headers, prelude.get("headers"));
    for cookie in prelude.get("cookies").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

/// Copies a `headers` object (each value a string, or a list of strings) onto `headers`.
fn copy_headers(headers: &mut HeaderMap, given: Option<&Value>) {
    for (name, value) in given.and_then(Value::as_object).into_iter().flatten() {
        let Ok(name) = HeaderName::try_from(name.as_str()) else { continue };
        let values: Vec<&str> = match value {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(name.clone(), value);
            }
        }
    }
}
