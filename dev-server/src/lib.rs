//! The local API: every function's routes merged into one router, exactly the paths API Gateway serves,
//! on the embedded store. Used by `make run` and by the end-to-end tests; never deployed.

pub mod razorpay_standin;
pub mod upstream_standin;

use axum::Router;
use shared::state::AppState;

/// Every function's routes, finished into one app.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .merge(signup::routes())
        .merge(auth::routes())
        .merge(kyc::routes())
        .merge(wallet::routes())
        .merge(razorpay_webhook::routes())
        .merge(keys::routes())
        .merge(inference::routes())
        .merge(usage::routes());
    shared::http::finish(routes, state)
}
