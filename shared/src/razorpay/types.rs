//! Razorpay's wire types: orders, payments, refunds, disputes, collections and webhook events, as its API
//! reference spells them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/orders` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewOrder {
    pub amount: i64,
    pub currency: String,
    pub receipt: String,
    pub notes: Map<String, Value>,
}

/// An order as Razorpay returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    #[serde(default)]
    pub entity: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_paid: i64,
    #[serde(default)]
    pub amount_due: i64,
    pub currency: String,
    #[serde(default)]
    pub receipt: Option<String>,
    pub status: String,
    #[serde(default)]
    pub attempts: i64,
    /// An object, or `[]` when empty (Razorpay's quirk).
    #[serde(default)]
    pub notes: Value,
    #[serde(default)]
    pub created_at: i64,
}

/// A payment as Razorpay returns it (the fields this service uses).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    #[serde(default)]
    pub entity: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    /// The payer's phone, e-mail and UPI address as Razorpay reports them (personal data: kept with the
    /// payment's record and shown in its owner's export).
    #[serde(default)]
    pub contact: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub vpa: Option<String>,
    #[serde(default)]
    pub notes: Value,
    #[serde(default)]
    pub created_at: i64,
}

/// A refund (the fields this service uses).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub payment_id: String,
    pub amount: i64,
    #[serde(default = "inr")]
    pub currency: String,
    /// `pending`, `processed` (final) or `failed`.
    #[serde(default)]
    pub status: Option<String>,
    /// What we sent with it (an object, or `[]` when empty); our own refunds carry [`REFUND_NOTE`].
    #[serde(default)]
    pub notes: Value,
    #[serde(default)]
    pub receipt: Option<String>,
}

/// The note naming our own refund (a closed account's money sent back to its payment) in a refund's notes.
pub const REFUND_NOTE: &str = "inferex_refund";

impl Refund {
    /// Our refund record this refund was made for, if we made it.
    pub fn our_reference(&self) -> Option<&str> {
        self.notes.get(REFUND_NOTE).and_then(Value::as_str)
    }
}

/// `POST /v1/payments/{id}/refund` body (Razorpay refuses fields it does not know).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewRefund {
    /// Paise, at least 100 (₹1).
    pub amount: i64,
    /// `normal` (Razorpay's default: 5-7 working days) or `optimum`.
    pub speed: String,
    pub receipt: String,
    /// At most 15 keys.
    pub notes: Map<String, Value>,
}

fn inr() -> String {
    "INR".into()
}

/// A dispute (chargeback) on a payment (the fields this service uses).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dispute {
    pub id: String,
    pub payment_id: String,
    /// Disputed amount, paise.
    pub amount: i64,
    #[serde(default = "inr")]
    pub currency: String,
    /// What Razorpay deducted from the merchant balance (0 unless lost), paise.
    #[serde(default)]
    pub amount_deducted: i64,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Collection<T> {
    #[serde(default)]
    pub entity: String,
    #[serde(default)]
    pub count: i64,
    pub items: Vec<T>,
}

/// A webhook delivery.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookEvent {
    pub event: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub created_at: Option<i64>,
}

impl WebhookEvent {
    fn entity<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        serde_json::from_value(self.payload.get(name)?.get("entity")?.clone()).ok()
    }

    pub fn payment(&self) -> Option<Payment> {
        self.entity("payment")
    }

    pub fn order(&self) -> Option<Order> {
        self.entity("order")
    }

    pub fn refund(&self) -> Option<Refund> {
        self.entity("refund")
    }

    pub fn dispute(&self) -> Option<Dispute> {
        self.entity("dispute")
    }
}
