//! The usage function: the account's usage log (`GET /v1/usage`) and summaries per day or model
//! (`GET /v1/usage/summary`). Queries live in `shared::usage`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use shared::accounts::timestamp;
use shared::auth::Session;
use shared::error::{ApiError, ApiResult};
use shared::http::QueryParams;
use shared::state::AppState;
use shared::usage::{self, Totals, UsageQuery, UsageView};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/usage", get(list)).route("/v1/usage/summary", get(summary))
}

pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

#[derive(Debug, Serialize)]
struct UsagePage {
    object: &'static str,
    data: Vec<UsageView>,
    has_more: bool,
    next_cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    QueryParams(query): QueryParams<UsageQuery>,
) -> ApiResult<Json<UsagePage>> {
    let after = match &query.cursor {
        Some(cursor) => Some(
            URL_SAFE_NO_PAD
                .decode(cursor.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|sk| sk.starts_with("USAGE#"))
                .ok_or_else(|| ApiError::invalid("invalid_cursor", "cursor", "cursor is not one this API returned"))?,
        ),
        None => None,
    };
    let (records, next) = usage::list(state.store.as_ref(), &session.user_id, &query, state.clock.now(), after).await?;
    Ok(Json(UsagePage {
        object: "list",
        data: records.iter().map(UsageView::from).collect(),
        has_more: next.is_some(),
        next_cursor: next.map(|sk| URL_SAFE_NO_PAD.encode(sk)),
    }))
}

#[derive(Debug, Serialize)]
struct Summary {
    object: &'static str,
    group_by: &'static str,
    from: String,
    to: String,
    data: Vec<Totals>,
}

async fn summary(
    State(state): State<AppState>,
    session: Session,
    QueryParams(query): QueryParams<UsageQuery>,
) -> ApiResult<Json<Summary>> {
    let now = state.clock.now();
    let (from, to) = usage::window(&query, now)?;
    let group_by = match usage::group_by(&query)? {
        usage::GroupBy::Day => "day",
        usage::GroupBy::Model => "model",
    };
    let data = usage::summary(state.store.as_ref(), &session.user_id, &query, now).await?;
    Ok(Json(Summary { object: "usage.summary", group_by, from: timestamp(from), to: timestamp(to), data }))
}
