//! The local API: every function's routes merged into one router, exactly the paths API Gateway serves,
//! on the embedded store. Used by `make run` and by the end-to-end tests; never deployed.

use axum::Router;
use shared::state::AppState;

/// Every function's routes, finished into one app.
pub fn app(state: AppState) -> Router {
    let routes = Router::new().merge(signup::routes()).merge(auth::routes()).merge(kyc::routes());
    shared::http::finish(routes, state)
}
