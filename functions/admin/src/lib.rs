//! The admin function: every operator route (`/v1/admin/*`), in a function of its own with its own role,
//! so no customer-facing function holds the operators' credentials or their right to open the KYC vault.
//! Operators sign in with their token and a code from their authenticator (`sign_in`); every other route
//! takes the session and allows only the roles `shared::operators::OPERATOR_ROUTES` lists for it.

use axum::Router;
use axum::routing::{get, post, put};
use shared::state::AppState;

mod incidents;
mod kyc;
mod payments;
mod privacy_requests;
mod returns;
mod sign_in;
mod support;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/totp/enrol", post(sign_in::enrol))
        .route("/v1/admin/sessions", post(sign_in::open_session).delete(sign_in::close_session))
        .route("/v1/admin/me", get(sign_in::me))
        .route("/v1/admin/kyc/queue", get(kyc::queue))
        .route("/v1/admin/kyc/{user_id}/decision", post(kyc::decide))
        .route("/v1/admin/kyc/aadhaar-erasure", get(kyc::erasure))
        .route("/v1/admin/kyc/{user_id}/reveal", post(kyc::reveal))
        .route("/v1/admin/refund-requests", get(payments::refund_requests))
        .route("/v1/admin/refund-requests/{user_id}/payout", post(payments::record_payout))
        .route("/v1/admin/payment-reviews", get(payments::payment_reviews))
        .route("/v1/admin/payment-reviews/{review_id}/handled", post(payments::mark_review_handled))
        .route("/v1/admin/disputes", get(payments::disputes))
        .route("/v1/admin/disputes/{dispute_id}/handled", post(payments::mark_dispute_handled))
        .route("/v1/admin/gstr1/{period}", get(returns::as_json))
        .route("/v1/admin/gstr1/{period}/csv/{section}", get(returns::as_csv))
        .route("/v1/admin/accounts/{user_id}/limits", put(support::set_ceiling))
        .route("/v1/admin/accounts/{user_id}/revoke-access", post(incidents::revoke_account))
        .route("/v1/admin/revoke-access", post(incidents::revoke_everyone))
        .route("/v1/admin/campaigns", post(support::send_campaign))
        .route("/v1/admin/incidents", get(incidents::list).post(incidents::open))
        .route("/v1/admin/incidents/{incident_id}", get(incidents::get))
        .route("/v1/admin/incidents/{incident_id}/events", post(incidents::add_event))
        .route("/v1/admin/incidents/{incident_id}/notices", post(incidents::notice))
        .route("/v1/admin/privacy-requests", get(privacy_requests::list).post(privacy_requests::record))
        .route("/v1/admin/privacy-requests/{request_id}/events", post(privacy_requests::add_note))
        .route("/v1/admin/privacy-requests/{request_id}/answer", post(privacy_requests::answer))
        .route("/v1/admin/accounts/{user_id}/corrections", post(privacy_requests::correct))
}

pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}
