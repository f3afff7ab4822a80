//! The auth function: login, logout, sessions, password changes and resets, e-mail verification and the
//! signed-in account (`/v1/auth/*`, `/v1/account*`).
//! Credentials checks, throttling and sessions live in `shared::auth`; e-mailed links in
//! `shared::verification`.

pub mod pages;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shared::accounts::{AccountView, ClientInfo, timestamp};
use shared::auth::{self, CSRF_COOKIE, LoginAttemptView, LoginStore, SESSION_COOKIE, Session, SessionStore};
use shared::error::{ApiError, ApiResult};
use shared::http::{JsonBody, ListPage, QueryParams, page_limit};
use shared::state::AppState;
use shared::verification;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/account", get(account))
        .route("/v1/account/logins", get(logins))
        .route("/v1/account/password", post(change_password))
        .route("/v1/auth/sessions", get(sessions).delete(sign_out_everywhere))
        .route("/v1/auth/sessions/{session_id}", delete(revoke_session))
        .route("/v1/auth/verify-email", post(verify_email))
        .route("/v1/auth/verify-email/resend", post(resend_verification))
        .route("/v1/auth/password-reset", post(request_password_reset))
        .route("/v1/auth/password-reset/confirm", post(confirm_password_reset))
        .merge(pages::routes())
}

pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

#[derive(Debug, Deserialize)]
struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Debug, Serialize)]
struct LoginResponse {
    token: String,
    expires_at: String,
    /// What a cookie-carried request that changes something sends in `X-CSRF-Token`.
    csrf_token: String,
}

/// Responses that carry or clear credentials must never be cached.
fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The session cookie (HttpOnly: no script reads it) and the CSRF cookie (readable by the dashboard's own
/// script, which echoes it in `X-CSRF-Token`; `SameSite=Strict`, as only our pages need it). Empty values
/// with `Max-Age=0` clear both.
fn set_session_cookies(headers: &mut HeaderMap, token: &str, max_age_secs: i64) -> ApiResult<()> {
    let csrf = if token.is_empty() { String::new() } else { auth::csrf_token(token) };
    for cookie in [
        format!("{SESSION_COOKIE}={token}; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age={max_age_secs}"),
        format!("{CSRF_COOKIE}={csrf}; Secure; SameSite=Strict; Path=/; Max-Age={max_age_secs}"),
    ] {
        let value = HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(format!("cookie header: {e}")))?;
        headers.append(header::SET_COOKIE, value);
    }
    Ok(())
}

async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    JsonBody(request): JsonBody<LoginRequest>,
) -> ApiResult<Response> {
    let issued = auth::login(&state.ports, &request.email, request.password, &client).await?;
    let csrf_token = auth::csrf_token(&issued.token);
    let mut response =
        Json(LoginResponse { token: issued.token.clone(), expires_at: timestamp(issued.expires_at), csrf_token })
            .into_response();
    set_session_cookies(response.headers_mut(), &issued.token, issued.max_age_secs)?;
    no_store(response.headers_mut());
    Ok(response)
}

async fn logout(State(state): State<AppState>, session: Session) -> ApiResult<Response> {
    state.store.revoke_session(&session).await?;
    tracing::info!(user_id = %session.user_id, "session revoked");
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_session_cookies(response.headers_mut(), "", 0)?;
    no_store(response.headers_mut());
    Ok(response)
}

async fn account(State(state): State<AppState>, session: Session) -> ApiResult<Json<AccountView>> {
    let account = auth::session_account(state.store(), &session).await?;
    let residency = shared::account_limits::residency_of(state.store(), &session.user_id).await?;
    Ok(Json(AccountView::new(&account, &state.config.policy_version).residing(residency)))
}

#[derive(Debug, Deserialize)]
struct LoginsQuery {
    limit: Option<u32>,
}

const DEFAULT_LOGINS: u32 = 20;
const MAX_LOGINS: u32 = 100;

async fn logins(
    State(state): State<AppState>,
    session: Session,
    QueryParams(query): QueryParams<LoginsQuery>,
) -> ApiResult<Json<Vec<LoginAttemptView>>> {
    let limit = page_limit(query.limit, DEFAULT_LOGINS, MAX_LOGINS)?;
    let attempts = state.store.login_history(&session.user_id, limit).await?;
    Ok(Json(attempts.iter().map(LoginAttemptView::from).collect()))
}

async fn sessions(State(state): State<AppState>, session: Session) -> ApiResult<Json<ListPage<auth::SessionView>>> {
    Ok(Json(ListPage::all(auth::sessions(state.store(), &session).await?)))
}

async fn revoke_session(
    State(state): State<AppState>,
    session: Session,
    Path(session_id): Path<String>,
) -> ApiResult<StatusCode> {
    auth::revoke_session_by_id(state.store(), &session.user_id, &session_id).await?;
    tracing::info!(user_id = %session.user_id, "session revoked by its account");
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of the account, this one included; the cookie is cleared.
async fn sign_out_everywhere(State(state): State<AppState>, session: Session) -> ApiResult<Response> {
    let ended = auth::sign_out_everywhere(state.store(), &session).await?;
    tracing::info!(user_id = %session.user_id, ended, "signed out everywhere");
    let mut response = Json(serde_json::json!({ "sessions_ended": ended })).into_response();
    set_session_cookies(response.headers_mut(), "", 0)?;
    no_store(response.headers_mut());
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    session: Session,
    JsonBody(body): JsonBody<PasswordChange>,
) -> ApiResult<Json<serde_json::Value>> {
    let ended = auth::change_password(&state.ports, &session, body.current_password, body.new_password).await?;
    tracing::info!(user_id = %session.user_id, ended, "password changed; other sessions ended");
    Ok(Json(serde_json::json!({ "password_changed": true, "other_sessions_ended": ended })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: String,
}

/// Uses an e-mail verification link: the token is the proof for the account's own address; an address
/// change also needs a session of the account (a valid one, if presented, is passed on; a cookie only
/// with its CSRF token, as for any change).
async fn verify_email(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    JsonBody(body): JsonBody<TokenBody>,
) -> ApiResult<Json<verification::Verified>> {
    let store = state.store();
    let session = match shared::http::presented_session(&headers) {
        Some((token, carrier)) if shared::http::check_csrf(&method, &headers, &token, carrier).is_ok() => {
            auth::authenticate(store, &token).await.ok()
        }
        _ => None,
    };
    let user = session.as_ref().map(|s| s.user_id.as_str());
    let verified = verification::verify_email(&state.ports, &body.token, user).await?;
    tracing::info!("e-mail address verified");
    Ok(Json(verified))
}

async fn resend_verification(State(state): State<AppState>, session: Session) -> ApiResult<Response> {
    let address = verification::resend(&state.ports, &session.user_id).await?;
    let body = serde_json::json!({ "sent": true, "email": address });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    email: String,
}

/// The same answer whether or not an account has the address.
async fn request_password_reset(
    State(state): State<AppState>,
    client: ClientInfo,
    JsonBody(body): JsonBody<ResetRequest>,
) -> ApiResult<Response> {
    verification::request_reset(&state.ports, &body.email, &client).await?;
    let body = serde_json::json!({
        "status": "sent_if_registered",
        "message": "if an account has this address, a reset link valid for 30 minutes is on its way",
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetConfirm {
    token: String,
    password: String,
}

async fn confirm_password_reset(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ResetConfirm>,
) -> ApiResult<Response> {
    let ended = verification::confirm_reset(&state.ports, &body.token, body.password).await?;
    tracing::info!(ended, "password reset; every session ended");
    let mut response = Json(serde_json::json!({ "password_reset": true, "sessions_ended": ended })).into_response();
    // Whatever session this browser had is gone with the others.
    set_session_cookies(response.headers_mut(), "", 0)?;
    no_store(response.headers_mut());
    Ok(response)
}
