//! Razorpay's refunds API as the stand-in speaks it (from Razorpay's API reference): `POST
//! /v1/payments/{id}/refund` (`amount` in paise, the whole unrefunded rest when absent; `speed`; `receipt`;
//! at most 15 `notes`; no other field), `GET /v1/refunds/{id}` and `GET /v1/payments/{id}/refunds`.
//! Like Razorpay it refuses, with 400 `BAD_REQUEST_ERROR` and Razorpay's descriptions, a payment that is
//! not captured, more than six months old, under an open dispute or fully refunded, an amount under ₹1 or
//! above what is left; `X-Refund-Idempotency` (10 or more letters, digits, `-`, `_`) answers a repeated
//! request with the same refund and refuses a different one under the same key. A refund starts `pending`
//! (a normal refund takes Razorpay days) and is `processed` when the test, or `POST /dev/refunds/process`,
//! settles it, with the `refund.processed` webhook; `refund.created` goes out at once.

use std::collections::{HashMap, HashSet};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use shared::razorpay::Payment;

use super::{StandIn, error, razorpay_id, refusal_if_forwarded};

/// Razorpay refunds payments up to six months old.
const REFUNDABLE_FOR_SECONDS: i64 = 180 * 86_400;
const FIELDS: [&str; 4] = ["amount", "speed", "receipt", "notes"];

type Refusal = (StatusCode, String);

#[derive(Default)]
pub(super) struct RefundBooks {
    refunds: Vec<Value>,
    /// Idempotency key -> (the request's body, the refund's id).
    keys: HashMap<String, (Value, String)>,
    disputed: HashSet<String>,
    /// The next refund is made but its answer lost (a 502 after the work, as a connection cut would).
    lose_next_answer: bool,
    /// Every refund request is refused with this description (Razorpay's balance too low, say).
    refusing: Option<String>,
}

impl RefundBooks {
    /// Razorpay's answer to a refund request under an idempotency key it has seen (the refund it made, or a
    /// refusal for a different body), or to a malformed key; `None` for a new key.
    fn replay(&self, key: &str, body: &Value) -> Option<Result<Value, Refusal>> {
        let refused = |description: &str| (StatusCode::BAD_REQUEST, description.to_owned());
        if key.len() < 10 || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Some(Err(refused("The idempotency key must be at least 10 characters long")));
        }
        let (earlier, refund_id) = self.keys.get(key)?;
        if earlier != body {
            return Some(Err(refused("Different request with the same idempotency key has already been processed.")));
        }
        Some(
            self.refunds
                .iter()
                .find(|r| r["id"] == refund_id.as_str())
                .cloned()
                .ok_or_else(|| (StatusCode::INTERNAL_SERVER_ERROR, "Failed to fetch idempotency record".to_owned())),
        )
    }

    pub(super) fn set_disputed(&mut self, payment_id: &str, open: bool) {
        if open {
            self.disputed.insert(payment_id.to_owned());
        } else {
            self.disputed.remove(payment_id);
        }
    }

    fn refunded(&self, payment_id: &str) -> i64 {
        self.of(payment_id).filter(|r| r["status"] != "failed").filter_map(|r| r["amount"].as_i64()).sum()
    }

    fn of<'a>(&'a self, payment_id: &'a str) -> impl Iterator<Item = &'a Value> {
        self.refunds.iter().filter(move |r| r["payment_id"] == payment_id)
    }
}

pub(super) fn routes() -> Router<StandIn> {
    Router::new()
        .route("/v1/payments/{payment_id}/refund", post(create_refund))
        .route("/v1/payments/{payment_id}/refunds", get(payment_refunds))
        .route("/v1/refunds/{refund_id}", get(refund))
        .route("/dev/refunds/process", post(dev_process))
}

impl StandIn {
    /// Settles every pending refund as Razorpay does days later: `processed`, with the `refund.processed`
    /// webhook. Returns how many.
    pub async fn process_refunds(&self) -> usize {
        let settled: Vec<(Value, Option<Payment>)> = {
            let mut books = self.books();
            let mut settled = Vec::new();
            for refund in books.refunds.refunds.iter_mut().filter(|r| r["status"] == "pending") {
                refund["status"] = json!("processed");
                settled.push(refund.clone());
            }
            settled
                .into_iter()
                .map(|r| {
                    let payment = r["payment_id"].as_str().and_then(|id| books.payments.get(id).cloned());
                    (r, payment)
                })
                .collect()
        };
        for (refund, payment) in &settled {
            let payload = json!({ "refund": { "entity": refund }, "payment": { "entity": payment } });
            self.deliver(&self.webhook("refund.processed", payload)).await;
        }
        settled.len()
    }

    /// Makes a payment look `days` older (Razorpay refuses refunds of payments over six months old).
    pub fn age_payment(&self, payment_id: &str, days: i64) {
        if let Some(payment) = self.books().payments.get_mut(payment_id) {
            payment.created_at -= days * 86_400;
        }
    }

    /// The next refund request is carried out, and its answer lost.
    pub fn lose_next_refund_answer(&self) {
        self.books().refunds.lose_next_answer = true;
    }

    /// Refuses every refund request with Razorpay's `description` (`None`: stop refusing).
    pub fn refuse_refunds(&self, description: Option<&str>) {
        self.books().refunds.refusing = description.map(str::to_owned);
    }

    /// Forgets every idempotency key, as Razorpay may after some time (its documentation says not how long).
    pub fn forget_idempotency_keys(&self) {
        self.books().refunds.keys.clear();
    }

    /// A pending refund fails (the bank returned it), with the `refund.failed` webhook.
    pub async fn fail_refund(&self, refund_id: &str) -> bool {
        let failed = {
            let mut books = self.books();
            let refund = books.refunds.refunds.iter_mut().find(|r| r["id"] == refund_id && r["status"] == "pending");
            refund.map(|r| {
                r["status"] = json!("failed");
                r.clone()
            })
        };
        let Some(refund) = failed else { return false };
        self.deliver(&self.webhook("refund.failed", json!({ "refund": { "entity": refund } }))).await;
        true
    }

    /// The refunds Razorpay holds for a payment (any state).
    pub fn refunds_of(&self, payment_id: &str) -> Vec<Value> {
        self.books().refunds.of(payment_id).cloned().collect()
    }

    /// Records a refund, or Razorpay's refusal of it (its status and description).
    fn refund_payment(&self, payment_id: &str, key: Option<&str>, body: &Value) -> Result<Value, Refusal> {
        let refused = |description: &str| (StatusCode::BAD_REQUEST, description.to_owned());
        let mut books = self.books();
        if let Some(key) = key
            && let Some(answer) = books.refunds.replay(key, body)
        {
            return answer;
        }
        if let Some(description) = &books.refunds.refusing {
            return Err(refused(description));
        }
        let request = body.as_object().ok_or_else(|| refused("The request body is invalid"))?;
        if let Some(extra) = request.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(refused(&format!("{extra} is/are not required and should not be sent")));
        }
        let payment =
            books.payments.get(payment_id).cloned().ok_or_else(|| refused("The id provided does not exist"))?;
        if payment.status != "captured" {
            return Err(refused("The payment status should be captured for action to be taken"));
        }
        if chrono::Utc::now().timestamp() - payment.created_at > REFUNDABLE_FOR_SECONDS {
            return Err(refused("Refund is not supported by the bank because the payment is more than 6 months old"));
        }
        if books.refunds.disputed.contains(payment_id) {
            return Err(refused("The refund on this payment is blocked due to ongoing dispute investigation."));
        }
        let left = payment.amount - books.refunds.refunded(payment_id);
        if left <= 0 {
            return Err(refused("The payment has been fully refunded already"));
        }
        let amount = match request.get("amount") {
            None | Some(Value::Null) => left,
            Some(amount) => amount.as_i64().ok_or_else(|| refused("The amount must be an integer."))?,
        };
        if amount < 100 {
            return Err(refused("The amount must be at least INR 1.00"));
        }
        if amount > left {
            return Err(refused("The refund amount provided is greater than amount captured"));
        }
        let speed = request.get("speed").and_then(Value::as_str).unwrap_or("normal");
        if !["normal", "optimum"].contains(&speed) {
            return Err(refused("The selected speed is invalid."));
        }
        let notes = request.get("notes").cloned().unwrap_or_else(|| Value::Object(Map::new()));
        if notes.as_object().is_none_or(|n| n.len() > 15) {
            return Err(refused("notes can have at most 15 keys"));
        }
        let refund = json!({
            "id": razorpay_id("rfnd"), "entity": "refund", "amount": amount, "currency": payment.currency,
            "payment_id": payment_id, "notes": if notes.as_object().is_some_and(Map::is_empty) { json!([]) } else { notes },
            "receipt": request.get("receipt").cloned().unwrap_or(Value::Null), "acquirer_data": { "arn": null },
            "created_at": chrono::Utc::now().timestamp(), "batch_id": null, "status": "pending",
            "speed_processed": "normal", "speed_requested": speed,
        });
        books.refunds.refunds.push(refund.clone());
        if let (Some(key), Some(id)) = (key, refund["id"].as_str()) {
            books.refunds.keys.insert(key.to_owned(), (body.clone(), id.to_owned()));
        }
        Ok(refund)
    }
}

async fn create_refund(
    State(standin): State<StandIn>,
    headers: HeaderMap,
    Path(payment_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = standin.refusal(&headers) {
        return refused;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "The request body is invalid");
    };
    let key = headers.get("x-refund-idempotency").and_then(|v| v.to_str().ok());
    let refunds_before = standin.books().refunds.refunds.len();
    match standin.refund_payment(&payment_id, key, &body) {
        Ok(refund) => {
            if standin.books().refunds.refunds.len() > refunds_before {
                let payment = standin.books().payments.get(&payment_id).cloned();
                let payload = json!({ "refund": { "entity": refund }, "payment": { "entity": payment } });
                standin.deliver(&standin.webhook("refund.created", payload)).await;
            }
            if std::mem::take(&mut standin.books().refunds.lose_next_answer) {
                return error(StatusCode::BAD_GATEWAY, "the answer was lost on its way");
            }
            Json(refund).into_response()
        }
        Err((status, description)) => error(status, &description),
    }
}

async fn refund(State(standin): State<StandIn>, headers: HeaderMap, Path(refund_id): Path<String>) -> Response {
    if let Some(refused) = standin.refusal(&headers) {
        return refused;
    }
    match standin.books().refunds.refunds.iter().find(|r| r["id"] == refund_id.as_str()) {
        Some(refund) => Json(refund.clone()).into_response(),
        None => error(StatusCode::BAD_REQUEST, "The id provided does not exist"),
    }
}

async fn payment_refunds(
    State(standin): State<StandIn>,
    headers: HeaderMap,
    Path(payment_id): Path<String>,
) -> Response {
    if let Some(refused) = standin.refusal(&headers) {
        return refused;
    }
    let items = standin.refunds_of(&payment_id);
    Json(json!({ "entity": "collection", "count": items.len(), "items": items })).into_response()
}

/// `POST /dev/refunds/process`: settles the pending refunds now (`make run`; Razorpay takes days).
async fn dev_process(State(standin): State<StandIn>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal_if_forwarded(&headers) {
        return refused;
    }
    Json(json!({ "processed": standin.process_refunds().await })).into_response()
}

#[cfg(test)]
mod tests {
    use super::super::StandInConfig;
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn standin_with_payment() -> (StandIn, String) {
        let standin = StandIn::new(StandInConfig {
            key_id: "rzp_test_unit".into(),
            key_secret: "unit_key_secret".into(),
            webhook_secret: "unit_webhook_secret".into(),
            webhook_url: None,
        });
        let payment = Payment {
            id: "pay_Unit0000000001".into(),
            entity: "payment".into(),
            amount: 50_000,
            currency: "INR".into(),
            status: "captured".into(),
            order_id: None,
            method: Some("card".into()),
            contact: Some("+919000090000".into()),
            email: Some("void@razorpay.com".into()),
            vpa: None,
            notes: json!([]),
            created_at: chrono::Utc::now().timestamp(),
        };
        standin.books().payments.insert(payment.id.clone(), payment);
        (standin, "pay_Unit0000000001".into())
    }

    async fn refund(standin: &StandIn, payment: &str, key: Option<&str>, body: Value) -> (StatusCode, Value) {
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode("rzp_test_unit:unit_key_secret");
        let mut request = axum::http::Request::post(format!("/v1/payments/{payment}/refund"))
            .header("authorization", format!("Basic {auth}"))
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("x-refund-idempotency", key);
        }
        let Ok(request) = request.body(Body::from(body.to_string())) else {
            return (StatusCode::IM_A_TEAPOT, Value::Null);
        };
        let Ok(response) = super::super::router(standin.clone()).oneshot(request).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn description(answer: &(StatusCode, Value)) -> (StatusCode, String) {
        (answer.0, answer.1["error"]["description"].as_str().unwrap_or_default().to_owned())
    }

    #[tokio::test]
    async fn refunds_follow_razorpays_limits_and_idempotency() {
        let (standin, payment) = standin_with_payment();
        let bad = StatusCode::BAD_REQUEST;
        let extra = refund(&standin, &payment, None, json!({ "amount": 1_000, "reason": "x" })).await;
        assert_eq!(description(&extra), (bad, "reason is/are not required and should not be sent".into()));
        let small = refund(&standin, &payment, None, json!({ "amount": 99 })).await;
        assert_eq!(description(&small), (bad, "The amount must be at least INR 1.00".into()));
        let over = refund(&standin, &payment, None, json!({ "amount": 50_001 })).await;
        assert_eq!(description(&over), (bad, "The refund amount provided is greater than amount captured".into()));
        let short_key = refund(&standin, &payment, Some("short"), json!({ "amount": 1_000 })).await;
        assert_eq!(short_key.0, bad);

        let first = refund(&standin, &payment, Some("crf_0123456789"), json!({ "amount": 20_000 })).await;
        assert_eq!((first.0, first.1["status"].clone()), (StatusCode::OK, json!("pending")));
        let again = refund(&standin, &payment, Some("crf_0123456789"), json!({ "amount": 20_000 })).await;
        assert_eq!(again.1["id"], first.1["id"], "the same key answers the same refund");
        let changed = refund(&standin, &payment, Some("crf_0123456789"), json!({ "amount": 30_000 })).await;
        assert_eq!(
            description(&changed),
            (bad, "Different request with the same idempotency key has already been processed.".into())
        );
        assert_eq!(standin.refunds_of(&payment).len(), 1);

        standin.books().refunds.set_disputed(&payment, true);
        let disputed = refund(&standin, &payment, None, json!({})).await;
        assert_eq!(
            description(&disputed),
            (bad, "The refund on this payment is blocked due to ongoing dispute investigation.".into())
        );
        standin.books().refunds.set_disputed(&payment, false);
        let rest = refund(&standin, &payment, None, json!({})).await;
        assert_eq!((rest.0, rest.1["amount"].clone()), (StatusCode::OK, json!(30_000)), "no amount: the rest");
        let none_left = refund(&standin, &payment, None, json!({})).await;
        assert_eq!(description(&none_left), (bad, "The payment has been fully refunded already".into()));
        assert_eq!(standin.process_refunds().await, 2);
        assert!(standin.refunds_of(&payment).iter().all(|r| r["status"] == "processed"));

        let (standin, payment) = standin_with_payment();
        standin.age_payment(&payment, 181);
        let old = refund(&standin, &payment, None, json!({ "amount": 1_000 })).await;
        assert_eq!(
            description(&old),
            (bad, "Refund is not supported by the bank because the payment is more than 6 months old".into())
        );
    }
}
