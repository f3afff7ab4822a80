//! The local API: every function's routes merged into one router, exactly the paths API Gateway serves,
//! on the embedded store. Used by `make run` and by the end-to-end tests; never deployed.

pub mod dashboard;
pub mod fleet;
pub mod kyc_standin;
pub mod machine;
pub mod mailbox;
pub mod razorpay_standin;
pub mod standin_checkout;
pub mod upstream_standin;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use shared::error::ErrorCode;
use shared::error::{ApiError, ApiResult};
use shared::state::AppState;

/// Every function's routes and the local blob store's download links, finished into one app.
pub fn app(state: AppState) -> Router {
    shared::http::finish(routes().route(shared::blobs::LOCAL_LINK_ROUTE, axum::routing::get(local_blob_link)), state)
}

/// Every function's routes alone: what `make run` serves on an address other machines can reach.
pub fn api_only(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

/// Whether `make run` may mount its stand-ins (`/_razorpay`, whose dev pay route credits money without a
/// payment; `/_upstream`; `/_blobs`): only on a loopback address, unless `INFEREX_DEV_STANDINS=1` says so.
pub fn standins_allowed(addr: &std::net::SocketAddr, explicit: Option<bool>) -> bool {
    explicit.unwrap_or_else(|| addr.ip().is_loopback())
}

fn routes() -> Router<AppState> {
    Router::new()
        .merge(signup::routes())
        .merge(auth::routes())
        .merge(kyc::routes())
        .merge(wallet::routes())
        .merge(razorpay_webhook::routes())
        .merge(keys::routes())
        .merge(inference::routes())
        .merge(usage::routes())
        .merge(privacy::routes())
        .merge(admin::routes())
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
    let denied = || ApiError::Forbidden {
        code: ErrorCode::InvalidLink,
        message: "this download link is invalid or has expired".into(),
    };
    let local = state.blobs()?.local().ok_or_else(denied)?;
    let bytes = local.open_link(&key, link.expires, &link.signature, state.clock.now()).await?.ok_or_else(denied)?;
    let mut response = bytes.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddr};

    #[test]
    fn standins_are_mounted_on_loopback_only_unless_asked_for() {
        let loopback: [SocketAddr; 2] =
            [SocketAddr::from(([127, 0, 0, 1], 8080)), SocketAddr::from((Ipv6Addr::LOCALHOST, 8080))];
        let reachable: [SocketAddr; 3] = [
            SocketAddr::from(([0, 0, 0, 0], 8080)),
            SocketAddr::from(([10, 1, 2, 3], 8080)),
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 8080)),
        ];
        for addr in loopback {
            assert!(standins_allowed(&addr, None), "{addr}");
            assert!(!standins_allowed(&addr, Some(false)), "{addr}");
        }
        for addr in reachable {
            assert!(!standins_allowed(&addr, None), "{addr}");
            assert!(standins_allowed(&addr, Some(true)), "{addr}");
        }
    }
}
