//! The keys function: create (KYC-gated), list, change and revoke API keys. Rules live in `shared::keys`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use shared::auth::Session;
use shared::error::ApiResult;
use shared::http::JsonBody;
use shared::keys::{self, ApiKeyView, CreatedKey, KeyChanges, KeyStore, NewKeyRequest};
use shared::kyc;
use shared::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/keys", get(list).post(create)).route("/v1/keys/{key_id}", delete(revoke).patch(change))
}

pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

async fn create(
    State(state): State<AppState>,
    session: Session,
    JsonBody(request): JsonBody<NewKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    kyc::require_verified(state.store(), &session.user_id).await?;
    // A new key has spent nothing: its answer reads nothing more, so the one-time secret always reaches the
    // caller once the key exists.
    let created = keys::create_key(&state.ports, &session.user_id, request).await?;
    tracing::info!(user_id = %session.user_id, key_id = %created.view.id, "API key created");
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Serialize)]
struct KeyList {
    object: &'static str,
    data: Vec<ApiKeyView>,
}

async fn list(State(state): State<AppState>, session: Session) -> ApiResult<Json<KeyList>> {
    let mut records = state.store.keys(&session.user_id).await?;
    records.sort_by_key(|(_, record)| std::cmp::Reverse(record.created_at));
    let records: Vec<_> = records.into_iter().map(|(_, record)| record).collect();
    let data = ApiKeyView::all(state.store(), &records, state.clock().now()).await?;
    Ok(Json(KeyList { object: "list", data }))
}

async fn change(
    State(state): State<AppState>,
    session: Session,
    Path(key_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<ApiKeyView>> {
    let changes = KeyChanges::from_body(&body)?;
    let record = keys::change_key(state.store(), &session.user_id, &key_id, changes).await?;
    tracing::info!(user_id = %session.user_id, %key_id, "API key changed");
    state.keys_changed(&session.user_id);
    Ok(Json(ApiKeyView::of(state.store(), &record, state.clock().now()).await?))
}

async fn revoke(State(state): State<AppState>, session: Session, Path(key_id): Path<String>) -> ApiResult<StatusCode> {
    keys::delete_key(state.store(), &session.user_id, &key_id).await?;
    tracing::info!(user_id = %session.user_id, %key_id, "API key revoked");
    state.keys_changed(&session.user_id);
    Ok(StatusCode::NO_CONTENT)
}
