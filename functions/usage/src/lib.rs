//! The usage function: the account's usage log (`GET /v1/usage`) and summaries per day or model
//! (`GET /v1/usage/summary`). Queries live in `shared::usage`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use shared::accounts::timestamp;
use shared::auth::Session;
use shared::error::ApiResult;
use shared::http::{ListPage, QueryParams};
use shared::state::AppState;
use shared::usage::{self, Totals, UsageQuery, UsageView};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/usage", get(list)).route("/v1/usage/summary", get(summary))
}

pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    QueryParams(query): QueryParams<UsageQuery>,
) -> ApiResult<Json<ListPage<UsageView>>> {
    let after = shared::usage::page_cursor(query.cursor.as_deref())?;
    let (records, next) = usage::list(state.store(), &session.user_id, &query, state.clock.now(), after).await?;
    Ok(Json(ListPage::page(records.iter().map(UsageView::from).collect(), next.as_deref())))
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
    let data = usage::summary(state.store(), &session.user_id, &query, now).await?;
    Ok(Json(Summary { object: "usage.summary", group_by, from: timestamp(from), to: timestamp(to), data }))
}
