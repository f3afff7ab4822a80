//! The signup function: `POST /v1/auth/signup`. The rules (email, password, 18+, consent, uniqueness)
//! live in `shared::accounts`; this handler only moves data between HTTP and the domain.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use shared::accounts::{AccountView, ClientInfo, SignupRequest};
use shared::error::ApiResult;
use shared::http::JsonBody;
use shared::state::AppState;

/// This function's routes, for the Lambda app and for the local dev server.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/auth/signup", post(signup))
}

/// The complete app this Lambda function serves.
pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

async fn signup(
    State(state): State<AppState>,
    client: ClientInfo,
    JsonBody(request): JsonBody<SignupRequest>,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    let account = shared::verification::signup(&state.ports, request, &client).await?;
    tracing::info!("signup answered");
    Ok((StatusCode::CREATED, Json(AccountView::new(&account, &state.config.policy_version))))
}
