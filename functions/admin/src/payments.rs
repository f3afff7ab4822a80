//! Money (`payments`): closed accounts' refund requests and the bank payouts that settle them, payments
//! recorded for review, and disputes Razorpay reported. The rules live in `shared::wallet`.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use shared::error::ApiResult;
use shared::http::{JsonBody, ListPage, Operator, QueryParams, decode_cursor, page_limit};
use shared::state::AppState;
use shared::wallet;

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

fn page(query: &PageQuery) -> ApiResult<(u32, Option<String>)> {
    let limit = page_limit(query.limit, DEFAULT_PAGE, MAX_PAGE)?;
    Ok((limit, decode_cursor(query.cursor.as_deref(), "")?))
}

/// Closed accounts' refund requests.
pub(crate) async fn refund_requests(
    State(state): State<AppState>,
    _: Operator,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<ListPage<wallet::RefundRequestView>>> {
    let (limit, after) = page(&query)?;
    let (views, next) = wallet::refund_requests(state.store(), limit, after).await?;
    Ok(Json(ListPage::page(views, next.as_deref())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Payout {
    /// What the request showed as owed, wallet units.
    amount: i64,
    /// The bank transfer's reference (UTR).
    reference: String,
}

pub(crate) async fn record_payout(
    State(state): State<AppState>,
    operator: Operator,
    Path(user_id): Path<String>,
    JsonBody(payout): JsonBody<Payout>,
) -> ApiResult<Json<wallet::RefundRequestView>> {
    let payout = wallet::Payout {
        user_id: &user_id,
        amount: payout.amount,
        reference: &payout.reference,
        operator: &operator.name,
    };
    Ok(Json(wallet::record_payout(&state.ports, payout).await?))
}

/// Payments recorded for review.
pub(crate) async fn payment_reviews(
    State(state): State<AppState>,
    _: Operator,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<ListPage<wallet::PaymentReviewView>>> {
    let (limit, after) = page(&query)?;
    let (views, next) = wallet::payment_reviews(state.store(), limit, after).await?;
    Ok(Json(ListPage::page(views, next.as_deref())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Handled {
    note: String,
}

pub(crate) async fn mark_review_handled(
    State(state): State<AppState>,
    operator: Operator,
    Path(review_id): Path<String>,
    JsonBody(handled): JsonBody<Handled>,
) -> ApiResult<Json<wallet::PaymentReviewView>> {
    let view = wallet::mark_review_handled(&state.ports, &review_id, &handled.note, &operator.name).await?;
    tracing::info!(operator = %operator.name, "payment review handled");
    Ok(Json(view))
}

/// Disputes Razorpay reported.
pub(crate) async fn disputes(
    State(state): State<AppState>,
    _: Operator,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<ListPage<wallet::DisputeView>>> {
    let (limit, after) = page(&query)?;
    let (views, next) = wallet::disputes(state.store(), limit, after).await?;
    Ok(Json(ListPage::page(views, next.as_deref())))
}

pub(crate) async fn mark_dispute_handled(
    State(state): State<AppState>,
    operator: Operator,
    Path(dispute_id): Path<String>,
    JsonBody(handled): JsonBody<Handled>,
) -> ApiResult<Json<wallet::DisputeView>> {
    let view = wallet::mark_dispute_handled(&state.ports, &dispute_id, &handled.note, &operator.name).await?;
    tracing::info!(operator = %operator.name, %dispute_id, "dispute handled");
    Ok(Json(view))
}
