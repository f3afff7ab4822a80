//! The wallet function: top-ups through Razorpay (KYC-gated, with GST), the Checkout callback, the balance,
//! the ledger and the account's tax documents (the operators' money routes are the admin function's). Money rules live in `shared::wallet` and `shared::money`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use shared::account_limits::{self, AccountLimits};
use shared::auth::Session;
use shared::error::ApiResult;
use shared::http::{JsonBody, ListPage, QueryParams, page_limit};
use shared::kyc;
use shared::spend::SpendAlert;
use shared::state::AppState;
use shared::wallet::{self, CheckoutCallback, LedgerEntryView, TopupView, WalletStore, WalletView};

mod tax_documents;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/wallet", get(balance).patch(settings))
        .route("/v1/wallet/transactions", get(transactions))
        .route("/v1/wallet/spend-alerts", get(spend_alerts))
        .route("/v1/limits", get(limits).patch(change_limits))
        .route("/v1/account/billing-profile", get(billing_profile).put(put_billing_profile))
        .route("/v1/wallet/topups", post(create_topup))
        .route("/v1/wallet/topups/{topup_id}/verify", post(verify))
        .merge(tax_documents::routes())
}

/// The name, address and state tax documents are issued to (404 `billing_profile_not_found` until set).
async fn billing_profile(
    State(state): State<AppState>,
    session: Session,
) -> ApiResult<Json<shared::billing::BillingProfileView>> {
    let profile = shared::billing::profile(state.store(), &session.user_id).await?.ok_or_else(|| {
        shared::error::ApiError::NotFound {
            code: shared::error::ErrorCode::BillingProfileNotFound,
            message: "no billing profile yet: set one with PUT /v1/account/billing-profile".into(),
        }
    })?;
    Ok(Json(shared::billing::BillingProfileView::from(&profile)))
}

async fn put_billing_profile(
    State(state): State<AppState>,
    session: Session,
    JsonBody(request): JsonBody<shared::billing::BillingProfileRequest>,
) -> ApiResult<Json<shared::billing::BillingProfileView>> {
    let profile = shared::billing::put_profile(state.store(), &session.user_id, request, state.clock().now()).await?;
    tracing::info!(user_id = %session.user_id, state_code = %profile.state_code, "billing profile set");
    Ok(Json(shared::billing::BillingProfileView::from(&profile)))
}

pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

#[derive(Debug, Deserialize)]
struct TopupRequest {
    amount_paise: i64,
}

async fn create_topup(
    State(state): State<AppState>,
    session: Session,
    JsonBody(request): JsonBody<TopupRequest>,
) -> ApiResult<(StatusCode, Json<TopupView>)> {
    kyc::require_verified(state.store(), &session.user_id).await?;
    let razorpay = state.razorpay()?;
    let topup = wallet::create_topup(&state.ports, razorpay, &session.user_id, request.amount_paise).await?;
    Ok((StatusCode::CREATED, Json(TopupView::new(&topup, &razorpay.config().await.key_id))))
}

async fn verify(
    State(state): State<AppState>,
    session: Session,
    Path(topup_id): Path<String>,
    JsonBody(callback): JsonBody<CheckoutCallback>,
) -> ApiResult<Json<TopupView>> {
    let razorpay = state.razorpay()?;
    let topup = wallet::verify_checkout(&state.ports, razorpay, &session.user_id, &topup_id, &callback).await?;
    Ok(Json(TopupView::new(&topup, &razorpay.config().await.key_id)))
}

async fn balance(State(state): State<AppState>, session: Session) -> ApiResult<Json<WalletView>> {
    Ok(Json(wallet::wallet_view(state.store(), &session.user_id, state.clock().now()).await?))
}

/// The wallet's own settings: the low-balance alert threshold.
async fn settings(
    State(state): State<AppState>,
    session: Session,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<WalletView>> {
    let settings = wallet::WalletSettings::from_body(&body)?;
    let now = state.clock().now();
    let wallet = wallet::change_settings(state.store(), &session.user_id, settings, now).await?;
    state.keys_changed(&session.user_id);
    Ok(Json(wallet))
}

/// The account's limits: its monthly spend limit, its keys' default rate limits and the operators' ceiling.
async fn limits(State(state): State<AppState>, session: Session) -> ApiResult<Json<AccountLimits>> {
    Ok(Json(account_limits::account_limits(state.store(), &session.user_id).await?))
}

async fn change_limits(
    State(state): State<AppState>,
    session: Session,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<AccountLimits>> {
    let changes = account_limits::customer_changes(&body)?;
    let limits = account_limits::change_account_limits(state.store(), &session.user_id, &changes).await?;
    state.keys_changed(&session.user_id);
    Ok(Json(limits))
}

/// The spend limits' latest alerts (50%, 80%, 100%), newest first.
async fn spend_alerts(State(state): State<AppState>, session: Session) -> ApiResult<Json<ListPage<SpendAlert>>> {
    Ok(Json(ListPage::all(shared::spend::list_alerts(state.store(), &session.user_id).await?)))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

async fn transactions(
    State(state): State<AppState>,
    session: Session,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<ListPage<LedgerEntryView>>> {
    let limit = page_limit(query.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let after = wallet::ledger_page_cursor(query.cursor.as_deref())?;
    let (entries, next) = state.store.ledger(&session.user_id, limit, after).await?;
    Ok(Json(ListPage::page(entries.iter().map(LedgerEntryView::from).collect(), next.as_deref())))
}
