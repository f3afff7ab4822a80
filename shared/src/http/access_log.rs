//! One access line per request, written by the function itself. API Gateway's own access log can only
//! name the address of the connection it saw, which behind CloudFront is an edge server's; this line names
//! the browser's when the request proves it came through our distribution ([`super::viewer_address`]),
//! so unauthorised access can be traced to a client (DPDP Rules 2025, rule 6(1)(c) and (e): logs for
//! detecting and investigating it, kept a year; CERT-In directions of 28 April 2022, (iv): logs of ICT
//! systems kept within India). The line goes to the function's log group, kept `LogRetentionDays` (365)
//! in ap-south-1 like every other.
//!
//! The line holds no body, query string, credential or user agent: the route template (not the path,
//! which can carry identifiers), the method, status, latency and API Gateway's request id, which joins it
//! to API Gateway's access log line for the same request.

use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use lambda_http::request::RequestContext;

use crate::accounts::ClientInfo;
use crate::state::AppState;

/// The field that marks an access line (`$.fields.access` in CloudWatch Logs Insights).
pub const ACCESS_FIELD: &str = "access";

/// Logs the request once its answer's head is ready (a stream's body may run on after it).
pub async fn log_access(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let client = ClientInfo::from_request_parts(&mut parts, &state).await.ok().and_then(|c| c.ip);
    let route = parts.extensions.get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let request_id = gateway_request_id(parts.extensions.get::<RequestContext>());
    let method = parts.method.clone();
    let response = next.run(Request::from_parts(parts, body)).await;
    tracing::info!(
        access = true,
        request_id = request_id.as_deref().unwrap_or("-"),
        ip = client.as_deref().unwrap_or("-"),
        method = %method,
        route = route.as_deref().unwrap_or("(no route)"),
        status = response.status().as_u16(),
        latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// The id API Gateway gave the request (`$context.requestId` in its access log).
fn gateway_request_id(context: Option<&RequestContext>) -> Option<String> {
    match context? {
        RequestContext::ApiGatewayV1(c) => c.request_id.clone(),
        RequestContext::ApiGatewayV2(c) => c.request_id.clone(),
        _ => None,
    }
}
