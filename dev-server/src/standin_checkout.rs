//! The Razorpay stand-in's checkout page: what a customer sees in Razorpay Checkout, for the dashboard
//! under `make run`. `GET /_razorpay/checkout?order_id=…&return=/…` shows the order's amount with Pay, Fail
//! and Cancel; paying records the payment, delivers Razorpay's webhooks, and sends the browser back to
//! `return` with Checkout's callback fields (`razorpay_payment_id`, `razorpay_order_id`,
//! `razorpay_signature`), as Razorpay's redirect mode does; the dashboard then verifies them with our API.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::razorpay_standin::{StandIn, error, refusal_if_forwarded};

const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#0b2447;color:#111;margin:0;padding:1rem}\
main{max-width:26rem;margin:2rem auto;background:#fff;border-radius:.75rem;padding:1.5rem}\
h1{font-size:1.1rem;margin:0 0 1rem}.amount{font-size:2rem;font-weight:700;margin:.5rem 0}\
.muted{color:#555;font-size:.9rem}form{display:inline}button,a.cancel{font-size:1rem;padding:.6rem 1rem;\
margin:.75rem .5rem 0 0;border-radius:.4rem;border:1px solid #3395ff;background:#3395ff;color:#fff;cursor:pointer;\
text-decoration:none;display:inline-block}button.fail{background:#fff;color:#b00020;border-color:#b00020}\
a.cancel{background:#fff;color:#333;border-color:#999}:focus-visible{outline:3px solid #f5a623;outline-offset:2px}";

pub fn routes() -> Router<StandIn> {
    Router::new()
        .route("/checkout", get(checkout_page).post(checkout_pay))
        .route("/checkout.css", get(|| async { with_headers(STYLE.into(), "text/css; charset=utf-8") }))
}

#[derive(Deserialize)]
struct CheckoutQuery {
    order_id: String,
    #[serde(rename = "return")]
    return_to: String,
}

#[derive(Deserialize)]
struct CheckoutForm {
    order_id: String,
    #[serde(rename = "return")]
    return_to: String,
    outcome: String,
}

/// Where the page may send the browser back to: a path on this same server, never another site.
fn same_origin_path(return_to: &str) -> bool {
    return_to.starts_with('/')
        && !return_to.starts_with("//")
        && return_to.len() <= 512
        && !return_to.chars().any(|c| c == '\\' || c.is_control() || c.is_whitespace())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn with_headers(body: String, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Back to the dashboard with the given query fields appended to `return_to`.
fn back_to(return_to: &str, fields: &[(&str, &str)]) -> Response {
    let separator = if return_to.contains('?') { '&' } else { '?' };
    let query = serde_urlencoded::to_string(fields).unwrap_or_default();
    match HeaderValue::from_str(&format!("{return_to}{separator}{query}")) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => error(StatusCode::BAD_REQUEST, "return must be a path on this server"),
    }
}

/// Rupees with Indian digit grouping (₹1,23,456.78) from integer paise.
fn rupees(paise: i64) -> String {
    let digits = (paise / 100).abs().to_string();
    let (head, last3) = digits.split_at(digits.len().saturating_sub(3));
    let mut groups: Vec<&str> = Vec::new();
    let mut rest = head;
    while rest.len() > 2 {
        let (front, pair) = rest.split_at(rest.len() - 2);
        groups.insert(0, pair);
        rest = front;
    }
    if !rest.is_empty() {
        groups.insert(0, rest);
    }
    groups.push(last3);
    format!("₹{}.{:02}", groups.join(","), (paise % 100).abs())
}

async fn checkout_page(State(standin): State<StandIn>, Query(query): Query<CheckoutQuery>) -> Response {
    if !same_origin_path(&query.return_to) {
        return error(StatusCode::BAD_REQUEST, "return must be a path on this server");
    }
    let Some(order) = standin.order(&query.order_id) else {
        return error(StatusCode::BAD_REQUEST, "The id provided does not exist");
    };
    let (order_id, return_to) = (escape(&order.id), escape(&query.return_to));
    let amount = escape(&rupees(order.amount_due.max(0)));
    let cancel =
        escape(&format!("{}{}error=cancelled", query.return_to, if query.return_to.contains('?') { '&' } else { '?' }));
    let form = |outcome: &str, label: &str, class: &str| {
        format!(
            r#"<form method="post" action="checkout"><input type="hidden" name="order_id" value="{order_id}"><input type="hidden" name="return" value="{return_to}"><input type="hidden" name="outcome" value="{outcome}"><button type="submit" class="{class}" id="standin-{outcome}">{label}</button></form>"#
        )
    };
    let body = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Razorpay Checkout (local stand-in)</title><link rel="stylesheet" href="checkout.css"></head><body><main><h1>Razorpay Checkout: local stand-in</h1><p class="muted">InferexAI · order {order_id}</p><p class="amount" id="standin-amount">{amount}</p><p class="muted">No money moves: this page stands in for Razorpay under <code>make run</code>. Paying records a UPI payment and sends Razorpay's webhooks.</p>{pay}{fail}<a class="cancel" id="standin-cancel" href="{cancel}">Cancel</a></main></body></html>"#,
        pay = form("captured", &format!("Pay {amount}"), "pay"),
        fail = form("failed", "Fail the payment", "fail"),
    );
    with_headers(body, "text/html; charset=utf-8")
}

async fn checkout_pay(State(standin): State<StandIn>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Some(refused) = refusal_if_forwarded(&headers) {
        return refused;
    }
    let Ok(form) = serde_urlencoded::from_bytes::<CheckoutForm>(&body) else {
        return error(StatusCode::BAD_REQUEST, "order_id, return and outcome are required");
    };
    if !same_origin_path(&form.return_to) {
        return error(StatusCode::BAD_REQUEST, "return must be a path on this server");
    }
    let status = match form.outcome.as_str() {
        "captured" => "captured",
        "failed" => "failed",
        _ => return error(StatusCode::BAD_REQUEST, "outcome must be captured or failed"),
    };
    let Some((payment, _)) = standin.complete_payment(&form.order_id, status).await else {
        return error(StatusCode::BAD_REQUEST, "The id provided does not exist");
    };
    if status == "failed" {
        return back_to(&form.return_to, &[("error", "failed"), ("razorpay_order_id", &form.order_id)]);
    }
    let signature = standin.checkout_signature(&form.order_id, &payment.id);
    back_to(
        &form.return_to,
        &[
            ("razorpay_payment_id", &payment.id),
            ("razorpay_order_id", &form.order_id),
            ("razorpay_signature", &signature),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_sends_the_browser_back_only_to_this_server() {
        for good in ["/#/wallet/return?topup=top_1", "/", "/ops"] {
            assert!(same_origin_path(good), "{good}");
        }
        for bad in ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)", "", "/a b"] {
            assert!(!same_origin_path(bad), "{bad}");
        }
    }

    #[test]
    fn amounts_read_as_rupees_with_indian_grouping() {
        assert_eq!(rupees(50_000), "₹500.00");
        assert_eq!(rupees(123_456_789), "₹12,34,567.89");
        assert_eq!(rupees(5), "₹0.05");
        assert_eq!(rupees(100_000_000), "₹10,00,000.00");
    }
}
