//! Operators' sign-in: the bare token enrols an authenticator once (`POST /v1/admin/totp/enrol`) and, with
//! a code from it, opens a session (`POST /v1/admin/sessions`); the session signs out with `DELETE` and
//! says who it is with `GET /v1/admin/me`. The rules live in `shared::operators`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use shared::accounts::ClientInfo;
use shared::error::ApiResult;
use shared::http::{JsonBody, Operator, OperatorToken, bearer_token};
use shared::operator_auth::{self, OpenedSession};
use shared::operators::Role;
use shared::state::AppState;

#[derive(Debug, Serialize)]
pub(crate) struct Enrolled {
    otpauth_uri: String,
}

/// Enrols the operator's authenticator: the secret is answered once, as an `otpauth://` URI.
pub(crate) async fn enrol(
    State(state): State<AppState>,
    OperatorToken(operator): OperatorToken,
) -> ApiResult<(StatusCode, HeaderMap, Json<Enrolled>)> {
    let keys = state.kyc_keys()?;
    let uri = operator_auth::totp::enrol(state.store(), keys.data_keys.as_ref(), &operator, state.clock.now()).await?;
    tracing::warn!(operator = %operator.name, "operator authenticator enrolled");
    let mut headers = HeaderMap::new();
    headers.insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok((StatusCode::OK, headers, Json(Enrolled { otpauth_uri: uri })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignInRequest {
    code: String,
}

/// Opens a session with the token and a code.
pub(crate) async fn open_session(
    State(state): State<AppState>,
    OperatorToken(operator): OperatorToken,
    client: ClientInfo,
    JsonBody(request): JsonBody<SignInRequest>,
) -> ApiResult<(StatusCode, Json<OpenedSession>)> {
    let keys = state.kyc_keys()?;
    let attempt = operator_auth::Attempt { operator: &operator, code: &request.code, client: &client };
    let opened = operator_auth::sign_in(&state.ports, keys.data_keys.as_ref(), attempt).await?;
    Ok((StatusCode::CREATED, Json(opened)))
}

/// Signs the session out.
pub(crate) async fn close_session(
    State(state): State<AppState>,
    operator: Operator,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    operator_auth::sessions::close(state.store(), bearer_token(&headers).unwrap_or_default()).await?;
    tracing::info!(operator = %operator.name, "operator signed out");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
pub(crate) struct Me {
    operator: String,
    roles: Vec<Role>,
}

/// Who the session belongs to and the roles they hold now.
pub(crate) async fn me(operator: Operator) -> Json<Me> {
    Json(Me { operator: operator.name, roles: operator.roles })
}
