//! A local stand-in for Razorpay that speaks its wire format: `POST /v1/orders`, `GET /v1/payments/{id}`,
//! `GET /v1/orders/{id}/payments`, the refunds API (`refunds`: `POST /v1/payments/{id}/refund`, with its
//! limits and idempotency), all with HTTP Basic auth with the key id and secret, and signed webhooks
//! (`payment.captured`, `order.paid`, `payment.failed`, `refund.created`, `refund.processed`,
//! `payment.dispute.*`). It lets `make run` take a
//! payment with no network, and the tests drive every payment scenario. It lives only in the dev server
//! and the tests; Lambda builds never contain it.
//!
//! Besides Razorpay's API it has routes of its own, standing in for the customer paying in Checkout:
//! `POST /dev/orders/{order_id}/pay {"outcome": "captured" | "failed"}` records a payment, delivers the
//! webhooks Razorpay would send to the configured URL, and answers with the Checkout callback fields; and
//! a checkout page for the dashboard (`standin_checkout`) that does the same from a browser.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::razorpay::{Order, Payment, checkout_signature, webhook_signature};
use shared::secrets::random_suffix;

mod refunds;

/// Credentials the stand-in accepts and signs with, and where it delivers webhooks.
#[derive(Debug, Clone)]
pub struct StandInConfig {
    pub key_id: String,
    pub key_secret: String,
    pub webhook_secret: String,
    pub webhook_url: Option<String>,
}

#[derive(Default)]
struct Books {
    orders: HashMap<String, Order>,
    payments: HashMap<String, Payment>,
    failing: bool,
    webhooks_sent: usize,
    refunds: refunds::RefundBooks,
}

/// The stand-in's state; clone it to keep a handle for tests.
#[derive(Clone)]
pub struct StandIn {
    config: StandInConfig,
    books: Arc<Mutex<Books>>,
    http: reqwest::Client,
}

/// A webhook ready to deliver: the exact body and its headers.
#[derive(Debug, Clone)]
pub struct SignedWebhook {
    pub body: Vec<u8>,
    pub signature: String,
    pub event_id: String,
}

fn razorpay_id(prefix: &str) -> String {
    // Razorpay ids are a prefix and 14 alphanumerics.
    format!("{prefix}_{}", &random_suffix()[..14])
}

pub(crate) fn error(status: StatusCode, description: &str) -> Response {
    let body = json!({ "error": { "code": "BAD_REQUEST_ERROR", "description": description, "source": "NA", "step": "NA", "reason": "NA", "metadata": {} } });
    (status, Json(body)).into_response()
}

impl StandIn {
    pub fn new(config: StandInConfig) -> Self {
        Self { config, books: Arc::default(), http: reqwest::Client::new() }
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        match self.books.lock() {
            Ok(books) => books,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Makes the API (orders and payments) answer 500, as in an outage, or stop doing so.
    pub fn set_failing(&self, failing: bool) {
        self.books().failing = failing;
    }

    /// Forgets an order, as Razorpay does not know orders made under other keys: reads of it answer 400.
    pub fn forget_order(&self, order_id: &str) {
        self.books().orders.remove(order_id);
    }

    pub fn order(&self, order_id: &str) -> Option<Order> {
        self.books().orders.get(order_id).cloned()
    }

    /// How many orders were made.
    pub fn order_count(&self) -> usize {
        self.books().orders.len()
    }

    pub fn webhooks_sent(&self) -> usize {
        self.books().webhooks_sent
    }

    /// Records a payment on an order, as if the customer paid in Checkout, with the given status and amount.
    pub fn pay(&self, order_id: &str, status: &str, amount: Option<i64>) -> Option<Payment> {
        let mut books = self.books();
        let order = books.orders.get_mut(order_id)?;
        order.attempts += 1;
        let payment = Payment {
            id: razorpay_id("pay"),
            entity: "payment".into(),
            amount: amount.unwrap_or(order.amount),
            currency: order.currency.clone(),
            status: status.into(),
            order_id: Some(order_id.into()),
            method: Some("upi".into()),
            // What test mode reports for a UPI payment: the payer's phone, Razorpay's placeholder e-mail
            // when Checkout collected none, and the test VPA that always succeeds.
            contact: Some("+919000090000".into()),
            email: Some("void@razorpay.com".into()),
            vpa: Some("success@razorpay".into()),
            notes: order.notes.clone(),
            created_at: chrono::Utc::now().timestamp(),
        };
        if status == "captured" {
            order.status = "paid".into();
            order.amount_paid += payment.amount;
            order.amount_due = (order.amount - order.amount_paid).max(0);
        } else {
            order.status = "attempted".into();
        }
        books.payments.insert(payment.id.clone(), payment.clone());
        Some(payment)
    }

    /// Records a payment as Checkout would and delivers the webhooks Razorpay sends for it (captured:
    /// `payment.captured` and `order.paid`; failed: `payment.failed`), with each delivery's status.
    pub async fn complete_payment(&self, order_id: &str, status: &str) -> Option<(Payment, Vec<Value>)> {
        let payment = self.pay(order_id, status, None)?;
        let events: &[&str] =
            if status == "captured" { &["payment.captured", "order.paid"] } else { &["payment.failed"] };
        let mut deliveries = Vec::new();
        for event in events {
            let webhook = self.payment_webhook(event, &payment);
            deliveries.push(json!({ "event": event, "status": self.deliver(&webhook).await }));
        }
        Some((payment, deliveries))
    }

    /// The Checkout callback's signature for a payment.
    pub fn checkout_signature(&self, order_id: &str, payment_id: &str) -> String {
        checkout_signature(&self.config.key_secret, order_id, payment_id)
    }

    /// Builds a signed webhook the way Razorpay sends it.
    pub fn webhook(&self, event: &str, payload: Value) -> SignedWebhook {
        let contains: Vec<&String> = payload.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        let body = json!({
            "entity": "event",
            "account_id": "acc_StandIn0000001",
            "event": event,
            "contains": contains,
            "payload": payload,
            "created_at": chrono::Utc::now().timestamp(),
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let signature = webhook_signature(&self.config.webhook_secret, &body);
        SignedWebhook { body, signature, event_id: razorpay_id("evt") }
    }

    pub fn payment_webhook(&self, event: &str, payment: &Payment) -> SignedWebhook {
        let mut payload = json!({ "payment": { "entity": payment } });
        if event == "order.paid"
            && let Some(order) = payment.order_id.as_deref().and_then(|id| self.order(id))
        {
            payload["order"] = json!({ "entity": order });
        }
        self.webhook(event, payload)
    }

    pub fn refund_webhook(&self, payment: &Payment, amount: i64) -> SignedWebhook {
        let refund = json!({
            "id": razorpay_id("rfnd"), "entity": "refund", "amount": amount, "currency": payment.currency,
            "payment_id": payment.id, "status": "processed", "created_at": chrono::Utc::now().timestamp(),
        });
        self.webhook("refund.processed", json!({ "refund": { "entity": refund }, "payment": { "entity": payment } }))
    }

    /// A `payment.dispute.{created,won,lost,closed,...}` webhook for a dispute of `amount` paise; a lost
    /// dispute reports the amount deducted, as Razorpay does.
    /// Razorpay blocks refunds of a payment while its dispute is open, as the stand-in does from the
    /// dispute's creation to its end.
    pub fn dispute_webhook(&self, payment: &Payment, dispute_id: &str, event: &str, amount: i64) -> SignedWebhook {
        let status = event.strip_prefix("payment.dispute.").unwrap_or("open");
        let status = if status == "created" { "open" } else { status };
        self.books().refunds.set_disputed(&payment.id, matches!(status, "open" | "under_review" | "action_required"));
        let dispute = json!({
            "id": dispute_id, "entity": "dispute", "payment_id": payment.id, "amount": amount,
            "currency": payment.currency, "amount_deducted": if status == "lost" { amount } else { 0 },
            "reason_code": "chargeback", "reason_description": "The customer's bank raised a chargeback",
            "respond_by": chrono::Utc::now().timestamp() + 7 * 86_400, "status": status, "phase": "chargeback",
            "created_at": chrono::Utc::now().timestamp(),
        });
        self.webhook(event, json!({ "payment": { "entity": payment }, "dispute": { "entity": dispute } }))
    }

    /// Delivers a webhook to the configured URL; returns the HTTP status it got.
    pub async fn deliver(&self, webhook: &SignedWebhook) -> Option<u16> {
        let url = self.config.webhook_url.as_deref()?;
        let response = self
            .http
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-razorpay-signature", &webhook.signature)
            .header("x-razorpay-event-id", &webhook.event_id)
            .body(webhook.body.clone())
            .send()
            .await
            .ok()?;
        self.books().webhooks_sent += 1;
        Some(response.status().as_u16())
    }

    /// Answers for Razorpay's API routes before their work: 401 without the keys, 500 while failing.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        if !self.authorised(headers) {
            return Some(error(StatusCode::UNAUTHORIZED, "Authentication failed"));
        }
        self.books()
            .failing
            .then(|| error(StatusCode::INTERNAL_SERVER_ERROR, "We are facing some trouble completing your request"))
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        let expected = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.config.key_id, self.config.key_secret));
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Basic {expected}"))
    }
}

/// Razorpay's API plus the stand-in's `/dev` route and its checkout page (`/checkout`).
pub fn router(standin: StandIn) -> Router {
    Router::new()
        .route("/v1/orders", post(create_order))
        .route("/v1/orders/{order_id}/payments", get(order_payments))
        .route("/v1/payments/{payment_id}", get(payment))
        .route("/dev/orders/{order_id}/pay", post(dev_pay))
        .merge(refunds::routes())
        .merge(crate::standin_checkout::routes())
        .with_state(standin)
}

#[derive(Deserialize)]
struct NewOrderBody {
    amount: i64,
    currency: String,
    #[serde(default)]
    receipt: Option<String>,
    #[serde(default)]
    notes: serde_json::Map<String, Value>,
}

async fn create_order(State(standin): State<StandIn>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !standin.authorised(&headers) {
        return error(StatusCode::UNAUTHORIZED, "Authentication failed");
    }
    if standin.books().failing {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "We are facing some trouble completing your request");
    }
    let Ok(body) = serde_json::from_slice::<NewOrderBody>(&body) else {
        return error(StatusCode::BAD_REQUEST, "The request body is invalid");
    };
    if body.amount < 100 || body.currency != "INR" {
        return error(StatusCode::BAD_REQUEST, "The amount must be at least INR 1.00");
    }
    if body.receipt.as_ref().is_some_and(|r| r.len() > 40) || body.notes.len() > 15 {
        return error(StatusCode::BAD_REQUEST, "receipt or notes are too long");
    }
    let order = Order {
        id: razorpay_id("order"),
        entity: "order".into(),
        amount: body.amount,
        amount_paid: 0,
        amount_due: body.amount,
        currency: body.currency,
        receipt: body.receipt,
        status: "created".into(),
        attempts: 0,
        // Razorpay returns empty notes as an empty array.
        notes: if body.notes.is_empty() { json!([]) } else { Value::Object(body.notes) },
        created_at: chrono::Utc::now().timestamp(),
    };
    standin.books().orders.insert(order.id.clone(), order.clone());
    Json(order).into_response()
}

async fn order_payments(State(standin): State<StandIn>, headers: HeaderMap, Path(order_id): Path<String>) -> Response {
    if !standin.authorised(&headers) {
        return error(StatusCode::UNAUTHORIZED, "Authentication failed");
    }
    let books = standin.books();
    if books.failing {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "We are facing some trouble completing your request");
    }
    if !books.orders.contains_key(&order_id) {
        return error(StatusCode::BAD_REQUEST, "The id provided does not exist");
    }
    let items: Vec<&Payment> = books.payments.values().filter(|p| p.order_id.as_deref() == Some(&order_id)).collect();
    Json(json!({ "entity": "collection", "count": items.len(), "items": items })).into_response()
}

async fn payment(State(standin): State<StandIn>, headers: HeaderMap, Path(payment_id): Path<String>) -> Response {
    if !standin.authorised(&headers) {
        return error(StatusCode::UNAUTHORIZED, "Authentication failed");
    }
    match standin.books().payments.get(&payment_id) {
        Some(payment) => Json(payment).into_response(),
        None => error(StatusCode::BAD_REQUEST, "The id provided does not exist"),
    }
}

#[derive(Deserialize, Default)]
struct DevPay {
    #[serde(default)]
    outcome: Option<String>,
}

async fn dev_pay(
    State(standin): State<StandIn>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = refusal_if_forwarded(&headers) {
        return refused;
    }
    let request: DevPay = serde_json::from_slice(&body).unwrap_or_default();
    let status = match request.outcome.as_deref() {
        None | Some("captured") => "captured",
        Some("failed") => "failed",
        Some(_) => return error(StatusCode::BAD_REQUEST, "outcome must be captured or failed"),
    };
    let Some((payment, deliveries)) = standin.complete_payment(&order_id, status).await else {
        return error(StatusCode::BAD_REQUEST, "The id provided does not exist");
    };
    Json(json!({
        "razorpay_order_id": order_id,
        "razorpay_payment_id": payment.id,
        "razorpay_signature": standin.checkout_signature(&order_id, &payment.id),
        "status": payment.status,
        "webhooks": deliveries,
    }))
    .into_response()
}

/// The pay routes make money out of nothing: they are for someone at this machine, never for a request a
/// proxy on it passed along. The refusal, if this request is one.
pub(crate) fn refusal_if_forwarded(headers: &HeaderMap) -> Option<Response> {
    (headers.contains_key("forwarded") || headers.contains_key("x-forwarded-for"))
        .then(|| error(StatusCode::FORBIDDEN, "the local pay route answers only direct local requests"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_pay_route_refuses_requests_a_proxy_passed_along() -> Result<(), Box<dyn std::error::Error>> {
        let standin = StandIn::new(StandInConfig {
            key_id: "rzp_test_unit".into(),
            key_secret: "unit_key_secret".into(),
            webhook_secret: "unit_webhook_secret".into(),
            webhook_url: None,
        });
        let order = Order {
            id: "order_Unit0000000001".into(),
            entity: "order".into(),
            amount: 10_000,
            amount_paid: 0,
            amount_due: 10_000,
            currency: "INR".into(),
            receipt: None,
            status: "created".into(),
            attempts: 0,
            notes: json!([]),
            created_at: 0,
        };
        standin.books().orders.insert(order.id.clone(), order);
        let pay = |forwarded: bool| {
            let mut request = axum::http::Request::post("/dev/orders/order_Unit0000000001/pay");
            if forwarded {
                request = request.header("x-forwarded-for", "203.0.113.7");
            }
            request.body(axum::body::Body::empty())
        };
        let refused = router(standin.clone()).oneshot(pay(true)?).await?;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(standin.books().payments.is_empty(), "nothing was paid");
        let paid = router(standin.clone()).oneshot(pay(false)?).await?;
        assert_eq!(paid.status(), StatusCode::OK);
        assert_eq!(standin.books().payments.len(), 1);
        Ok(())
    }
}
