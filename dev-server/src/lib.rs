//! The local API: every function's routes merged into one router, exactly the paths API Gateway serves,
//! on the embedded store. Used by `make run` and by the end-to-end tests; never deployed.

pub mod razorpay_standin;
pub mod upstream_standin;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use shared::error::{ApiError, ApiResult};
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
        .merge(usage::routes())
        .merge(privacy::routes())
        .route(shared::blobs::LOCAL_LINK_ROUTE, axum::routing::get(local_blob_link));
    shared::http::finish(routes, state)
}

#[derive(serde::Deserialize)]
struct LinkQuery {
    expires: i64,
    signature: String,
}

/// Serves the local blob store's signed download links (S3 serves presigned links itself): the blob if the
/// link is genuine and unexpired, else 403.
async fn local_blob_link(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(link): Query<LinkQuery>,
) -> ApiResult<Response> {
    let denied =
        || ApiError::Forbidden { code: "invalid_link", message: "this download link is invalid or has expired".into() };
    let local = state.blobs()?.local().ok_or_else(denied)?;
    let bytes = local.open_link(&key, link.expires, &link.signature, state.clock.now()).await?.ok_or_else(denied)?;
    let mut response = bytes.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
