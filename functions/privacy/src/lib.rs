//! The privacy function: the data principal's rights. Correction (`PATCH /v1/account`), acceptance of a new
//! policy, data exports, account closure (`DELETE /v1/account`), the list of their requests, and the public
//! notice (`GET /v1/privacy`); marketing: one-click unsubscribe (`/v1/unsubscribe`). The rules live in `shared::privacy` and `shared::notifications`. A second binary, `exports`, builds the
//! data exports requested here, started by the main table's stream ([`build_requested_exports`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use shared::accounts::{AccountView, ClientInfo};
use shared::auth::Session;
use shared::error::{ApiError, ApiResult, ErrorCode};
use shared::http::{JsonBody, ListPage, QueryParams, page_limit};
use shared::privacy::{self, Closure, ExportStatus, ExportView, PrivacyContext, PrivacyRequestView};
use shared::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/account", axum::routing::patch(correct).delete(close))
        .route("/v1/account/accept-policy", post(accept_policy))
        .route("/v1/account/nominee", get(nominee).put(put_nominee).delete(remove_nominee))
        .route("/v1/privacy", get(notice))
        .route("/v1/privacy/requests", get(requests).post(submit_request))
        .route("/v1/privacy/exports", post(create_export))
        .route("/v1/privacy/exports/{export_id}", get(export))
        .route("/v1/privacy/exports/{export_id}/download", post(export_download))
        .route("/v1/privacy/export-link", get(export_link))
        .route("/v1/unsubscribe", get(unsubscribe_page).post(unsubscribe))
}

pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

/// The account's nominee (DPDP Act s.14); 404 `nominee_not_found` while none is named.
async fn nominee(State(state): State<AppState>, session: Session) -> ApiResult<Json<privacy::Nominee>> {
    let named = privacy::nominee(&PrivacyContext::from(&state), &session.user_id).await?;
    named.map(Json).ok_or_else(|| ApiError::NotFound {
        code: ErrorCode::NomineeNotFound,
        message: "no nominee is named: name one with PUT /v1/account/nominee".into(),
    })
}

async fn put_nominee(
    State(state): State<AppState>,
    session: Session,
    JsonBody(request): JsonBody<privacy::NomineeRequest>,
) -> ApiResult<Json<privacy::Nominee>> {
    let named = privacy::put_nominee(&PrivacyContext::from(&state), &session.user_id, request).await?;
    tracing::info!(user_id = %session.user_id, "nominee named");
    Ok(Json(named))
}

async fn remove_nominee(State(state): State<AppState>, session: Session) -> ApiResult<StatusCode> {
    privacy::remove_nominee(&PrivacyContext::from(&state), &session.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn notice(State(state): State<AppState>) -> Json<Value> {
    Json(privacy::notice(&PrivacyContext::from(&state)))
}

async fn correct(
    State(state): State<AppState>,
    session: Session,
    client: ClientInfo,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<AccountView>> {
    let (account, residency) =
        privacy::change_account(&PrivacyContext::from(&state), &session.user_id, body, &client).await?;
    // A new residency applies to the account's keys this instance has cached at once (others within the
    // key cache's minute).
    state.keys_changed(&session.user_id);
    tracing::info!(user_id = %session.user_id, "account changed");
    Ok(Json(AccountView::new(&account, &state.config.policy_version).residing(residency)))
}

#[derive(Debug, Deserialize)]
struct AcceptPolicy {
    version: String,
}

async fn accept_policy(
    State(state): State<AppState>,
    session: Session,
    client: ClientInfo,
    JsonBody(body): JsonBody<AcceptPolicy>,
) -> ApiResult<Json<AccountView>> {
    let account =
        privacy::accept_policy(&PrivacyContext::from(&state), &session.user_id, &body.version, &client).await?;
    let residency = shared::account_limits::residency_of(state.store(), &session.user_id).await?;
    Ok(Json(AccountView::new(&account, &state.config.policy_version).residing(residency)))
}

#[derive(Debug, Deserialize)]
struct CloseRequest {
    password: Option<String>,
}

async fn close(
    State(state): State<AppState>,
    session: Session,
    JsonBody(body): JsonBody<CloseRequest>,
) -> ApiResult<(StatusCode, Json<Closure>)> {
    let closure = privacy::close_account(&PrivacyContext::from(&state), &session.user_id, body.password).await?;
    tracing::info!(user_id = %session.user_id, "account closed");
    Ok((StatusCode::ACCEPTED, Json(closure)))
}

#[derive(Debug, Deserialize)]
struct RequestsQuery {
    limit: Option<u32>,
}

const MAX_REQUESTS: u32 = 100;

async fn requests(
    State(state): State<AppState>,
    session: Session,
    QueryParams(query): QueryParams<RequestsQuery>,
) -> ApiResult<Json<ListPage<PrivacyRequestView>>> {
    let limit = page_limit(query.limit, MAX_REQUESTS, MAX_REQUESTS)?;
    Ok(Json(ListPage::all(privacy::requests(state.store(), &session.user_id, limit).await?)))
}

/// A grievance, or a correction the dashboard cannot make, for a person to answer within 30 days.
async fn submit_request(
    State(state): State<AppState>,
    session: Session,
    JsonBody(request): JsonBody<privacy::CustomerRequest>,
) -> ApiResult<(StatusCode, Json<PrivacyRequestView>)> {
    let recorded = privacy::submit(&PrivacyContext::from(&state), &session.user_id, request).await?;
    tracing::info!(user_id = %session.user_id, request_id = %recorded.id, kind = ?recorded.kind, "privacy request received");
    Ok((StatusCode::CREATED, Json(recorded)))
}

/// Asks for an export; a body is optional: `{"password": "..."}` has the PAN in full.
async fn create_export(
    State(state): State<AppState>,
    session: Session,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        privacy::ExportRequest::default()
    } else {
        shared::http::parse_json(&body)?
    };
    let export = privacy::create_export(&PrivacyContext::from(&state), &session.user_id, request).await?;
    tracing::info!(user_id = %session.user_id, export_id = %export.id, "data export built");
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": export.id, "status": export.status }))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DownloadRequest {
    password: String,
}

/// The export's link with the password again: what an export holding the PAN in full needs.
async fn export_download(
    State(state): State<AppState>,
    session: Session,
    Path(export_id): Path<String>,
    JsonBody(request): JsonBody<DownloadRequest>,
) -> ApiResult<Json<ExportView>> {
    let ctx = PrivacyContext::from(&state);
    Ok(Json(privacy::export_view(&ctx, &session.user_id, &export_id, Some(request.password)).await?))
}

async fn export(
    State(state): State<AppState>,
    session: Session,
    Path(export_id): Path<String>,
) -> ApiResult<Json<ExportView>> {
    Ok(Json(privacy::export_view(&PrivacyContext::from(&state), &session.user_id, &export_id, None).await?))
}

/// The exports function's handler: builds every export a DynamoDB stream batch asks for and answers with
/// the records to deliver again (Lambda's partial batch response): only those whose build could not be
/// recorded. An export that failed to build is recorded as failed (its owner asks again), not retried.
pub async fn build_requested_exports(ctx: &PrivacyContext, event: &Value) -> Value {
    let mut failures = Vec::new();
    for job in privacy::export_jobs(event) {
        match privacy::build_export(ctx, &job.user_id, &job.export_id).await {
            Ok(ExportStatus::Ready) => tracing::info!(export_id = %job.export_id, "data export built"),
            Ok(status) => tracing::warn!(export_id = %job.export_id, ?status, "data export not built"),
            Err(e) => {
                tracing::error!(error = %e, export_id = %job.export_id, "data export build not recorded; retried");
                failures.push(json!({ "itemIdentifier": job.record }));
            }
        }
    }
    json!({ "batchItemFailures": failures })
}

#[derive(Debug, Deserialize)]
struct ExportLinkQuery {
    #[serde(default)]
    token: String,
}

/// A mailed export link: 303 to a fresh 15-minute link to the file. Nothing is cached or sent on as a
/// referrer (the link carries the token).
async fn export_link(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ExportLinkQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse;
    let target = privacy::export_link_target(&PrivacyContext::from(&state), &query.token).await?;
    let location = HeaderValue::from_str(&target).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct UnsubscribeQuery {
    #[serde(default)]
    token: String,
}

/// What a person who clicks the link sees: a button that confirms (a GET never unsubscribes, so link
/// scanners cannot do it for them). Mail clients use the one-click POST directly.
async fn unsubscribe_page(QueryParams(query): QueryParams<UnsubscribeQuery>) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    if query.token.is_empty() {
        // A link always carries its token: without one there is nothing to confirm.
        return Err(ApiError::invalid(
            ErrorCode::InvalidToken,
            "token",
            "token is required (the e-mail's link carries it)",
        ));
    }
    let token = shared::notifications::messages::escape(&query.token);
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head><body>\
         <h1>Stop product e-mails from InferexAI</h1><form method=\"post\" action=\"?token={token}\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form>\
         <p>Account and billing notices are not marketing and keep coming.</p></body></html>"
    );
    let mut response = axum::response::Html(page).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static("default-src 'none'; form-action 'self'"),
    );
    Ok(response)
}

/// RFC 8058's one-click POST (`List-Unsubscribe=One-Click` in the body; the token in the link is what
/// counts, so the body is not read).
async fn unsubscribe(
    State(state): State<AppState>,
    client: ClientInfo,
    QueryParams(query): QueryParams<UnsubscribeQuery>,
) -> ApiResult<Json<Value>> {
    privacy::unsubscribe(&PrivacyContext::from(&state), &query.token, &client).await?;
    Ok(Json(json!({ "unsubscribed": true, "marketing_consent": false })))
}
