//! HTTP plumbing shared by every function: the JSON body extractor (our error shape for every bad body),
//! the client-info and session extractors, and the routes every router ends with.

use crate::error::ErrorCode;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use lambda_http::request::RequestContext;
use serde::de::DeserializeOwned;
use tower::ServiceExt;
use tower::util::MapRequest;

use crate::accounts::ClientInfo;
use crate::auth::{self, CSRF_HEADER, SESSION_COOKIE, Session};
pub use crate::body::parse_json;
use crate::error::ApiError;
use crate::state::AppState;

mod access_log;
mod operator;
pub use access_log::{ACCESS_FIELD, log_access};
pub use operator::{Operator, OperatorToken};

/// Largest JSON body the dashboard endpoints accept (64 KiB); larger bodies get 413.
pub const MAX_JSON_BODY_BYTES: usize = 64 * 1024;
const MAX_USER_AGENT_CHARS: usize = 512;

/// A JSON request body. Wrong content type -> 415, too large -> 413, unparsable -> 400 `invalid_json`,
/// missing or wrongly typed field -> 400 naming the field in `param`.
#[derive(Debug)]
pub struct JsonBody<T, const LIMIT: usize = MAX_JSON_BODY_BYTES>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

impl<S: Send + Sync, T: DeserializeOwned, const LIMIT: usize> FromRequest<S> for JsonBody<T, LIMIT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let too_large = ApiError::PayloadTooLarge { limit_bytes: LIMIT };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > LIMIT) {
            return Err(too_large);
        }
        let json = is_json(req.headers());
        let bytes: Bytes = axum::body::to_bytes(req.into_body(), LIMIT).await.map_err(|_| too_large)?;
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// The header CloudFront adds to every request it sends the API, holding the edge secret.
pub const EDGE_PROOF_HEADER: &str = "x-inferex-edge";
/// The browser's address, written by our CloudFront function (template.yaml, `ViewerAddressFunction`) from
/// the connection CloudFront saw, over whatever the browser sent under that name.
pub const VIEWER_ADDRESS_HEADER: &str = "x-inferex-viewer-ip";

/// The browser's address behind CloudFront: believed only when the request carries the edge secret, which
/// only our distribution sends (anyone calling the API directly can write the address header), and only
/// when there is exactly one address.
pub fn viewer_address(headers: &HeaderMap, edge_secret: &str) -> Option<String> {
    proven_viewer_header(headers, edge_secret, VIEWER_ADDRESS_HEADER)?
        .trim()
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

/// The origin the browser addressed (`https://` and the distribution's domain, or the stack's custom
/// domain), written by the same CloudFront function; believed on the same terms as [`viewer_address`].
pub const VIEWER_ORIGIN_HEADER: &str = "x-inferex-viewer-origin";

/// The dashboard's origin as the browser reached it behind CloudFront, if the request proves it came
/// through our distribution: where a third party (DigiLocker) sends the browser back to. An https origin
/// with a host name only (plain http only for this machine, as `make fleet` serves it).
pub fn viewer_origin(headers: &HeaderMap, edge_secret: &str) -> Option<String> {
    let origin = proven_viewer_header(headers, edge_secret, VIEWER_ORIGIN_HEADER)?.trim().to_ascii_lowercase();
    let host = match origin.strip_prefix("https://") {
        Some(host) => host,
        None => ["http://127.0.0.1:", "http://localhost:"]
            .iter()
            .find_map(|local| origin.strip_prefix(local).filter(|port| port.parse::<u16>().is_ok()).map(|_| "local"))?,
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
    valid.then_some(origin)
}

/// A header CloudFront's function wrote, present once, on a request carrying the edge secret.
fn proven_viewer_header<'a>(headers: &'a HeaderMap, edge_secret: &str, name: &str) -> Option<&'a str> {
    let only = |name: &str| {
        let mut values = headers.get_all(name).iter();
        let value = values.next()?.to_str().ok()?;
        values.next().is_none().then_some(value)
    };
    let proof = only(EDGE_PROOF_HEADER)?;
    if edge_secret.is_empty() || !crate::secrets::constant_time_eq(proof.as_bytes(), edge_secret.as_bytes()) {
        return None;
    }
    only(name)
}

/// The caller's IP and user agent. The IP is the browser's as CloudFront reports it when the request proves
/// it came through our distribution (see [`viewer_address`]); else API Gateway's request context (the
/// source IP it saw), locally the TCP peer, and the last `X-Forwarded-For` hop only when configured as
/// trusted.
impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let viewer = match &state.edge_secret {
            Some(secret) => viewer_address(&parts.headers, secret.current().await.expose()),
            None => None,
        };
        let forwarded = state
            .config
            .trust_forwarded_for
            .then(|| parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()))
            .flatten()
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let gateway = parts.extensions.get::<RequestContext>().and_then(|ctx| match ctx {
            RequestContext::ApiGatewayV1(c) => c.identity.source_ip.clone(),
            RequestContext::ApiGatewayV2(c) => c.http.source_ip.clone(),
            _ => None,
        });
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect());
        Ok(ClientInfo { ip: viewer.or(forwarded).or(gateway).or(peer), user_agent })
    }
}

/// The credential of `Authorization: Bearer <token>`: the one parser for sessions, API keys and operators.
/// The scheme is case-insensitive (RFC 9110); an empty token is no token.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// How a session token reached us. A browser attaches the cookie to requests other sites make it send;
/// a bearer token is only ever sent by code that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCarrier {
    Bearer,
    Cookie,
}

/// The session token presented by the client and how: `Authorization: Bearer` first, then the cookie.
pub fn presented_session(headers: &HeaderMap) -> Option<(String, SessionCarrier)> {
    if let Some(token) = bearer_token(headers) {
        return Some((token.to_owned(), SessionCarrier::Bearer));
    }
    let token = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|cookies| {
        cookies.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then(|| value.trim().to_owned())
        })
    })?;
    Some((token, SessionCarrier::Cookie))
}

/// A state-changing request carried by the session cookie must also carry the session's CSRF token in
/// `X-CSRF-Token`: a page on another site can make the browser send the cookie, but cannot know the token.
pub fn check_csrf(method: &Method, headers: &HeaderMap, token: &str, carrier: SessionCarrier) -> Result<(), ApiError> {
    if carrier == SessionCarrier::Bearer || method.is_safe() {
        return Ok(());
    }
    let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().trim();
    let expected = auth::csrf_token(token);
    if crate::secrets::constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        code: ErrorCode::CsrfTokenInvalid,
        message: "a state-changing request made with the session cookie needs the X-CSRF-Token header: the \
                  csrf_token that login returned (also in the inferex_csrf cookie)"
            .into(),
    })
}

/// An authenticated dashboard session; rejects with 401 when missing, expired or revoked, and with 403
/// when a cookie-carried session changes something without its CSRF token.
impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (token, carrier) = presented_session(&parts.headers).ok_or_else(|| {
            ApiError::unauthenticated(
                ErrorCode::MissingSession,
                "authentication required: send the session cookie or Authorization: Bearer <session token>",
            )
        })?;
        let session = auth::authenticate(state.store(), &token).await?;
        check_csrf(&parts.method, &parts.headers, &token, carrier)?;
        auth::note_seen(state.store(), &session, state.clock.now()).await;
        Ok(session)
    }
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound { code: ErrorCode::NotFound, message: format!("no route for {method} {}", uri.path()) }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed { message: format!("{method} is not allowed on {}", uri.path()) }
}

/// Completes a function's routes into a servable app: `/health`, our 404/405 shapes, an access line per
/// request, the state.
pub fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .route("/health", get(health))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), log_access))
        .with_state(state)
}

/// Query-string parameters; a malformed or wrongly typed parameter answers 400 in our error shape.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri).map(|q| QueryParams(q.0)).map_err(|e| {
            ApiError::InvalidRequest { code: ErrorCode::InvalidQuery, message: e.body_text(), param: None }
        })
    }
}

/// API Gateway REST APIs put the stage (`/prod`) in front of the path lambda_http hands us; our routes
/// are stage-independent, so the prefix is removed before routing.
pub fn strip_stage<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    let stage = match request.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV1(c)) => c.stage.clone(),
        Some(RequestContext::ApiGatewayV2(c)) => c.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") else {
        return request;
    };
    let uri = request.uri();
    let Some(rest) = uri.path().strip_prefix(&format!("/{stage}")) else {
        return request;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return request;
    }
    let path = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    if let Ok(stripped) = Uri::from_parts(parts) {
        *request.uri_mut() = stripped;
    }
    request
}

/// The service a Lambda function runs: its app behind [`begin_invocation`]. Tests feed it API Gateway
/// events.
pub fn lambda_service(app: Router) -> MapRequest<Router, fn(lambda_http::Request) -> lambda_http::Request> {
    app.map_request(begin_invocation as fn(lambda_http::Request) -> lambda_http::Request)
}

/// Each invocation first logs the DynamoDB capacity the previous one consumed (one invocation at a time:
/// see `store::dynamo::capacity`), then has the stage stripped from its path.
fn begin_invocation(request: lambda_http::Request) -> lambda_http::Request {
    crate::store::dynamo::capacity::log_previous_invocation();
    strip_stage(request)
}

/// Serves a function's app on the Lambda runtime (API Gateway REST or HTTP API events).
pub async fn run_on_lambda(app: Router) -> Result<(), lambda_http::Error> {
    lambda_http::run(lambda_service(app)).await
}

/// One page of a list, as every list endpoint answers it: `{"object": "list", "data": [...]}`, plus
/// `has_more` and `next_cursor` (null on the last page) when the list is paged.
#[derive(Debug, serde::Serialize)]
pub struct ListPage<T> {
    object: &'static str,
    data: Vec<T>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    paging: Option<Paging>,
}

#[derive(Debug, serde::Serialize)]
struct Paging {
    has_more: bool,
    next_cursor: Option<String>,
}

impl<T> ListPage<T> {
    /// The whole list.
    pub fn all(data: Vec<T>) -> Self {
        Self { object: "list", data, paging: None }
    }

    /// One page; `next` is the last sort key read when more follow (encoded into the cursor).
    pub fn page(data: Vec<T>, next: Option<&str>) -> Self {
        Self {
            object: "list",
            data,
            paging: Some(Paging { has_more: next.is_some(), next_cursor: next.map(encode_cursor) }),
        }
    }
}

pub use crate::pages::{decode_cursor, encode_cursor, page_limit};

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn every_list_answers_in_one_shape() -> Result<(), serde_json::Error> {
        assert_eq!(
            serde_json::to_value(ListPage::all(vec![1, 2]))?,
            serde_json::json!({ "object": "list", "data": [1, 2] })
        );
        let last = serde_json::json!({ "object": "list", "data": [1], "has_more": false, "next_cursor": null });
        assert_eq!(serde_json::to_value(ListPage::page(vec![1], None))?, last);
        let more = serde_json::to_value(ListPage::page(vec![1], Some("LEDGER#0001#ab")))?;
        assert_eq!(
            (more["has_more"].clone(), more["next_cursor"].clone()),
            (serde_json::json!(true), serde_json::json!(encode_cursor("LEDGER#0001#ab")))
        );
        assert_eq!(page_limit(None, 20, 100).ok(), Some(20));
        assert_eq!(page_limit(Some(100), 20, 100).ok(), Some(100));
        for bad in [0, 101] {
            assert!(matches!(
                page_limit(Some(bad), 20, 100),
                Err(ApiError::InvalidRequest { code: ErrorCode::InvalidLimit, .. })
            ));
        }
        Ok(())
    }

    #[test]
    fn one_bearer_parser_for_every_credential() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            if let Ok(value) = value.parse() {
                headers.insert(header::AUTHORIZATION, value);
            }
            headers
        };
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc ", Some("abc")),
            ("Bearer ", None),
            ("Basic abc", None),
            ("Bearerabc", None),
            ("", None),
        ] {
            assert_eq!(bearer_token(&with(value)), token, "{value:?}");
        }
    }

    #[test]
    fn the_viewer_origin_is_believed_only_with_the_edge_secret() -> Result<(), Box<dyn std::error::Error>> {
        let edge = "edge-secret-for-the-test-0123456789";
        let headers = |proof: &str, host: &str| -> Result<HeaderMap, Box<dyn std::error::Error>> {
            let mut headers = HeaderMap::new();
            headers.insert(EDGE_PROOF_HEADER, proof.parse()?);
            headers.insert(VIEWER_ORIGIN_HEADER, host.parse()?);
            Ok(headers)
        };
        let https = "https://d1234.cloudfront.net";
        assert_eq!(viewer_origin(&headers(edge, https)?, edge).as_deref(), Some(https));
        assert_eq!(viewer_origin(&headers("forged", https)?, edge), None);
        assert_eq!(viewer_origin(&headers(edge, "https://evil.example/path?")?, edge), None, "a host name only");
        assert_eq!(viewer_origin(&headers(edge, "http://d1234.cloudfront.net")?, edge), None, "https only");
        let local = "http://127.0.0.1:8080";
        assert_eq!(viewer_origin(&headers(edge, local)?, edge).as_deref(), Some(local), "this machine");
        assert_eq!(viewer_origin(&HeaderMap::new(), edge), None);
        Ok(())
    }

    #[test]
    fn the_viewer_address_is_believed_only_with_the_edge_secret() {
        let secret = crate::secrets::random_token();
        let almost = &secret[..secret.len() - 1];
        let edge = secret.as_str();
        let with = |proof: Option<&str>, viewers: &[&str]| {
            let mut headers = HeaderMap::new();
            if let Some(proof) = proof.and_then(|p| p.parse().ok()) {
                headers.insert(EDGE_PROOF_HEADER, proof);
            }
            for viewer in viewers {
                if let Ok(viewer) = viewer.parse() {
                    headers.append(VIEWER_ADDRESS_HEADER, viewer);
                }
            }
            headers
        };
        for (proof, viewers, expected) in [
            (Some(edge), &["198.51.100.10"][..], Some("198.51.100.10")),
            (Some(edge), &["2406:2d40:728d:fa10::c4a"][..], Some("2406:2d40:728d:fa10::c4a")),
            // Forged, missing or almost right proof: not believed.
            (None, &["198.51.100.10"][..], None),
            (Some(almost), &["198.51.100.10"][..], None),
            (Some(""), &["198.51.100.10"][..], None),
            // Not exactly one address.
            (Some(edge), &["203.0.113.9", "198.51.100.10"][..], None),
            (Some(edge), &[][..], None),
            (Some(edge), &["evil.example"][..], None),
            (Some(edge), &["198.51.100.10:443"][..], None),
            (Some(edge), &[""][..], None),
        ] {
            assert_eq!(viewer_address(&with(proof, viewers), edge).as_deref(), expected, "{proof:?} {viewers:?}");
        }
        let mut doubled = with(Some(edge), &["198.51.100.10"]);
        doubled.append(EDGE_PROOF_HEADER, HeaderValue::from_static("second"));
        assert_eq!(viewer_address(&doubled, edge), None, "one proof, not two");
        assert_eq!(viewer_address(&with(Some(""), &["198.51.100.10"]), ""), None, "an empty secret proves nothing");
    }
}
