//! Top-ups: a Razorpay order and the top-up that tracks it, the Checkout callback, and the exactly-once
//! credit of a captured payment (shared by the webhook, the callback and reconciliation).

use crate::error::ErrorCode;
use crate::ports::Ports;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::adjustments::{MONEY_LEFT, PAID, REFUNDABLE, apply_deferred};
use super::closure::sync_closed_wallet;
use super::ledger::{BalanceChange, LedgerKind, apply_balance_change};
use super::topup_tax::{order_terms, paid_paise, receipt_due};
use super::{payment_expiry, record_review};
use crate::accounts::{time_sort_key, timestamp, user_pk};
use crate::error::{ApiError, ApiResult};
use crate::gst::{Party, TaxSplit};
use crate::money::paise_to_units;
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::razorpay::{NewOrder, Payment, RazorpayClient};
use crate::secrets::random_suffix;
use crate::store::schema::{self, order_pk, payment_pk, topup_pk};
use crate::store::{
    Condition, Conditional, Delete, Item, ItemStore, Put, Query, SortKeyRange, StoreError, StoreResult, Table, Update,
    WriteOp,
};

const TOPUP_SK: &str = schema::sk::TOPUP;
const OPEN_TOPUPS_PK: &str = schema::OPEN_TOPUPS_PK;
const ORDER_SK: &str = schema::sk::ORDER;
pub(super) const CREDIT_SK: &str = schema::sk::CREDIT;

fn open_sk(topup: &Topup) -> String {
    format!("{:013}#{}", topup.created_at.timestamp_millis().max(0), topup.id)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopupStatus {
    Created,
    Failed,
    Expired,
    Paid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Topup {
    pub id: String,
    pub user_id: String,
    pub razorpay_order_id: String,
    pub amount_paise: i64,
    pub currency: String,
    pub status: TopupStatus,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<DateTime<Utc>>,
    /// The GST charged on the credit (`amount_paise`): the order is for its total. Absent on orders made
    /// before top-ups carried GST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax: Option<TaxSplit>,
    /// The billing profile the order was made under: the receipt voucher's recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Party>,
}

/// How the API shows a top-up.
#[derive(Debug, Clone, Serialize)]
pub struct TopupView {
    pub id: String,
    pub razorpay_order_id: String,
    pub amount_paise: i64,
    pub currency: String,
    pub razorpay_key_id: String,
    pub status: TopupStatus,
    pub created_at: String,
    pub payment_id: Option<String>,
    /// The credit's GST and the order's total (`total_paise`, what Razorpay charges).
    pub tax: Option<TaxSplit>,
    /// The receipt voucher of a paid top-up, once issued (`GET /v1/tax-documents/{id}`).
    pub receipt_voucher_id: Option<String>,
}

impl TopupView {
    pub fn new(topup: &Topup, key_id: &str) -> Self {
        Self {
            id: topup.id.clone(),
            razorpay_order_id: topup.razorpay_order_id.clone(),
            amount_paise: topup.amount_paise,
            currency: topup.currency.clone(),
            razorpay_key_id: key_id.to_owned(),
            status: topup.status,
            created_at: timestamp(topup.created_at),
            payment_id: topup.payment_id.clone(),
            tax: topup.tax,
            receipt_voucher_id: topup
                .payment_id
                .as_deref()
                .filter(|_| topup.tax.is_some() && topup.status == TopupStatus::Paid)
                .map(crate::gst::receipts::receipt_voucher_id),
        }
    }
}

/// Who may have seen a payment first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditSource {
    Webhook,
    Verify,
    Reconciliation,
}

/// What happened to a credit attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditOutcome {
    Credited,
    AlreadyCredited,
    /// The payment does not match the stored order (amount, currency or order); recorded for review.
    Mismatch,
    /// A refund or dispute of a payment not credited yet: kept, and applied when the credit lands.
    Deferred,
}

/// Reads and the first write of top-ups (the credit, failure and expiry below change them afterwards).
#[async_trait]
pub trait TopupStore: Send + Sync {
    async fn topup(&self, topup_id: &str) -> StoreResult<Option<Topup>>;
    async fn topup_for_order(&self, order_id: &str) -> StoreResult<Option<Topup>>;
    async fn save_new_topup(&self, topup: &Topup, expires_at: i64) -> StoreResult<()>;
    async fn open_topups(&self, created_before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Topup>>;
}

#[async_trait]
impl<T: ItemStore + ?Sized> TopupStore for T {
    async fn topup(&self, topup_id: &str) -> StoreResult<Option<Topup>> {
        self.get(Table::Main, &topup_pk(topup_id), TOPUP_SK).await?.map(|i| i.record()).transpose()
    }

    async fn topup_for_order(&self, order_id: &str) -> StoreResult<Option<Topup>> {
        let Some(index) = self.get(Table::Main, &order_pk(order_id), ORDER_SK).await? else { return Ok(None) };
        match index.attrs.get("topup_id").and_then(Value::as_str) {
            Some(topup_id) => self.topup(topup_id).await,
            None => Err(StoreError::Malformed(format!("order index {order_id} has no topup_id"))),
        }
    }

    async fn save_new_topup(&self, topup: &Topup, expires_at: i64) -> StoreResult<()> {
        let index = json!({ "topup_id": topup.id, "user_id": topup.user_id });
        self.transact(vec![
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(topup_pk(&topup.id), TOPUP_SK, topup, Some(expires_at))?,
                condition: Condition::NotExists,
            }),
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(order_pk(&topup.razorpay_order_id), ORDER_SK, &index, Some(expires_at))?,
                condition: Condition::NotExists,
            }),
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(
                    OPEN_TOPUPS_PK,
                    open_sk(topup),
                    &json!({ "topup_id": topup.id }),
                    Some(expires_at),
                )?,
                condition: Condition::NotExists,
            }),
            // The account's own list of its top-ups (its data export reads it).
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(
                    user_pk(&topup.user_id),
                    time_sort_key(schema::prefix::TOPUP, topup.created_at),
                    &json!({ "topup_id": topup.id }),
                    Some(expires_at),
                )?,
                condition: Condition::NotExists,
            }),
        ])
        .await
    }

    async fn open_topups(&self, created_before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Topup>> {
        // Sort keys are `<millis>#<id>`; `~` sorts after every id character, so the bound is inclusive.
        let upper = format!("{:013}#~", created_before.timestamp_millis().max(0));
        let range = SortKeyRange::Between("0".into(), upper);
        let page = self.query(Query::new(Table::Main, OPEN_TOPUPS_PK).range(range).limit(limit)).await?;
        let mut topups = Vec::new();
        for item in page.items {
            if let Some(id) = item.attrs.get("topup_id").and_then(Value::as_str)
                && let Some(topup) = self.topup(id).await?
            {
                topups.push(topup);
            }
        }
        Ok(topups)
    }
}

/// Creates a Razorpay order and the top-up that tracks it. Nothing is stored when Razorpay fails, so no
/// top-up ever looks payable without an order behind it.
pub async fn create_topup(
    ports: &Ports,
    razorpay: &RazorpayClient,
    user_id: &str,
    amount_paise: i64,
) -> ApiResult<Topup> {
    let store = ports.store();
    let clock = ports.clock();
    let config = ports.config();
    if amount_paise < config.topup_min_paise || amount_paise > config.topup_max_paise {
        return Err(ApiError::invalid(
            ErrorCode::AmountOutOfRange,
            "amount_paise",
            format!(
                "amount_paise must be between {} and {} (₹{} to ₹{})",
                config.topup_min_paise,
                config.topup_max_paise,
                config.topup_min_paise / 100,
                config.topup_max_paise / 100
            ),
        ));
    }
    let (tax, recipient) = order_terms(ports, user_id, amount_paise).await?;
    let id = format!("tup_{}", random_suffix());
    let mut notes = Map::new();
    notes.insert("user_id".into(), json!(user_id));
    notes.insert("topup_id".into(), json!(id));
    let order = razorpay
        .create_order(&NewOrder { amount: tax.total_paise, currency: "INR".into(), receipt: id.clone(), notes })
        .await?;
    if order.amount != tax.total_paise || order.currency != "INR" {
        return Err(ApiError::BadGateway {
            code: ErrorCode::PaymentGatewayError,
            message: "the payment gateway created an order that does not match the request".into(),
        });
    }
    let now = clock.now();
    let topup = Topup {
        id,
        user_id: user_id.to_owned(),
        razorpay_order_id: order.id,
        amount_paise,
        currency: "INR".into(),
        status: TopupStatus::Created,
        created_at: now,
        payment_id: None,
        paid_at: None,
        tax: Some(tax),
        recipient: Some(recipient),
    };
    store.save_new_topup(&topup, payment_expiry(config, now)).await?;
    tracing::info!(%user_id, topup_id = %topup.id, order_id = %topup.razorpay_order_id, amount_paise, "top-up created");
    Ok(topup)
}

/// The Checkout handler's callback for one of the user's top-ups.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutCallback {
    pub razorpay_payment_id: String,
    pub razorpay_signature: String,
}

/// The Checkout callback: checks the signature against the order we stored, confirms the payment with
/// Razorpay and credits it when captured.
pub async fn verify_checkout(
    ports: &Ports,
    razorpay: &RazorpayClient,
    user_id: &str,
    topup_id: &str,
    callback: &CheckoutCallback,
) -> ApiResult<Topup> {
    let store = ports.store();
    let (payment_id, signature) = (callback.razorpay_payment_id.as_str(), callback.razorpay_signature.as_str());
    let not_found = || ApiError::NotFound { code: ErrorCode::TopupNotFound, message: format!("no top-up {topup_id}") };
    let topup = store.topup(topup_id).await?.filter(|t| t.user_id == user_id).ok_or_else(not_found)?;
    if !razorpay.verify_checkout(&topup.razorpay_order_id, payment_id, signature).await {
        return Err(ApiError::invalid(
            ErrorCode::InvalidSignature,
            "razorpay_signature",
            "razorpay_signature does not match this top-up's order and payment",
        ));
    }
    let payment = razorpay.payment(payment_id).await?;
    match payment.status.as_str() {
        "captured" => {
            let outcome = credit_payment(ports, &topup, &payment, CreditSource::Verify).await?;
            if outcome == CreditOutcome::Mismatch {
                return Err(ApiError::invalid(
                    ErrorCode::PaymentMismatch,
                    "razorpay_payment_id",
                    "the payment does not match this top-up; it has been sent for review",
                ));
            }
        }
        "failed" => mark_failed(store, &topup).await?,
        // authorized/created: not captured yet; the webhook or reconciliation will credit it.
        _ => {}
    }
    store.topup(topup_id).await?.ok_or_else(not_found)
}

/// Credits a captured payment to the owner of the top-up it paid, exactly once per payment id.
/// The amount credited is the stored order's; a payment whose amount, currency or order differ is not
/// credited but recorded for review.
pub async fn credit_payment(
    ports: &Ports,
    topup: &Topup,
    payment: &Payment,
    source: CreditSource,
) -> ApiResult<CreditOutcome> {
    let store = ports.store();
    let clock = ports.clock();
    let config = ports.config();
    let now = clock.now();
    let matches = payment.amount == paid_paise(topup)
        && payment.currency == topup.currency
        && payment.order_id.as_deref() == Some(topup.razorpay_order_id.as_str());
    if !matches {
        let details = json!({
            "reason": "payment does not match the stored order",
            "source": source,
            "topup_id": topup.id,
            "order_id": topup.razorpay_order_id,
            "expected_amount_paise": paid_paise(topup),
            "expected_currency": topup.currency,
            "payment_id": payment.id,
            "payment_order_id": payment.order_id,
            "payment_amount_paise": payment.amount,
            "payment_currency": payment.currency,
        });
        record_review(ports, now, details).await?;
        return Ok(CreditOutcome::Mismatch);
    }
    let units = paise_to_units(topup.amount_paise).ok_or_else(|| ApiError::Internal("amount overflows".into()))?;
    let expires_at = payment_expiry(config, now);
    let guard_pk = payment_pk(&payment.id);
    let extra = |balance_after: i64| {
        let mut ops = credit_ops(topup, payment, source, now, expires_at)?;
        let receipt = OutboxMail::new(MailKind::PaymentReceipt, &topup.user_id, now)
            .param("amount", units)
            .param("paid", paise_to_units(paid_paise(topup)).unwrap_or(units))
            .param("payment_id", payment.id.clone())
            .param("balance_after", balance_after);
        ops.push(enqueue(&receipt)?);
        Ok(ops)
    };
    let change = BalanceChange {
        user_id: &topup.user_id,
        kind: LedgerKind::Topup,
        amount: units,
        reference: &payment.id,
        at: now,
        expires_at,
        guard: (&guard_pk, CREDIT_SK),
    };
    let credited = apply_balance_change(store, change, extra).await?;
    if credited {
        tracing::info!(user_id = %topup.user_id, topup_id = %topup.id, payment_id = %payment.id, ?source, "payment credited");
    }
    // Refunds and disputes that arrived before the credit apply now (also on a repeated credit, in case the
    // process that credited stopped before it got here); money paid to a closed account goes to its refund.
    apply_deferred(ports, &payment.id).await?;
    sync_closed_wallet(ports, &topup.user_id).await?;
    // The receipt voucher (also on a repeated credit: the process that credited may have stopped first). The
    // money is credited whatever happens here: a voucher not issued now stays due, for the jobs.
    if let Err(e) = crate::gst::receipts::issue_receipt(ports, &payment.id).await {
        tracing::warn!(payment_id = %payment.id, error = %e, "receipt voucher left due for the jobs");
    }
    Ok(if credited { CreditOutcome::Credited } else { CreditOutcome::AlreadyCredited })
}

/// What a credit writes besides the balance: the payment's exactly-once guard (with what refunds and
/// disputes may still take back), the top-up marked paid, and its entry in the open list removed.
fn credit_ops(
    topup: &Topup,
    payment: &Payment,
    source: CreditSource,
    now: DateTime<Utc>,
    expires_at: i64,
) -> StoreResult<Vec<WriteOp>> {
    let guard = json!({
        "user_id": topup.user_id,
        "topup_id": topup.id,
        "order_id": topup.razorpay_order_id,
        "amount_paise": topup.amount_paise,
        // What the payment brought: the credit and its GST (refunds and chargebacks are of this money).
        PAID: paid_paise(topup),
        REFUNDABLE: topup.amount_paise,
        MONEY_LEFT: paid_paise(topup),
        "source": source,
        "credited_at": now,
        "payer": { "method": payment.method, "contact": payment.contact, "email": payment.email, "vpa": payment.vpa },
    });
    let receipt = receipt_due(topup, &payment.id, now, expires_at)?;
    Ok(vec![
        WriteOp::Put(Put {
            table: Table::Main,
            item: Item::from_record(payment_pk(&payment.id), CREDIT_SK, &guard, Some(expires_at))?,
            condition: Condition::NotExists,
        }),
        WriteOp::Update(
            Update::new(Table::Main, topup_pk(&topup.id), TOPUP_SK)
                .set("status", json!(TopupStatus::Paid))
                .set("payment_id", json!(payment.id))
                .set("paid_at", json!(now))
                .when(Condition::Exists),
        ),
        WriteOp::Delete(Delete {
            table: Table::Main,
            pk: OPEN_TOPUPS_PK.into(),
            sk: open_sk(topup),
            condition: Condition::Always,
        }),
        // Every payment of the account, a second one on the same order too (a closed account's refunds).
        super::closure_refunds::payment_index_put(&topup.user_id, &payment.id, expires_at)?,
    ]
    .into_iter()
    .chain(receipt)
    .collect())
}

/// Marks a top-up failed, unless it already moved on (paid, expired): state only moves forward.
pub async fn mark_failed<S: ItemStore + ?Sized>(store: &S, topup: &Topup) -> ApiResult<()> {
    if topup.status != TopupStatus::Created {
        return Ok(());
    }
    let update = Update::new(Table::Main, topup_pk(&topup.id), TOPUP_SK)
        .set("status", json!(TopupStatus::Failed))
        .when(Condition::AttrEquals("status".into(), json!(TopupStatus::Created)));
    Ok(store.update(update).await.or_not_needed()?)
}

/// Expires an unpaid top-up (reconciliation), unless it moved on meanwhile.
pub(super) async fn expire_topup<S: ItemStore + ?Sized>(store: &S, topup: &Topup) -> ApiResult<()> {
    let result = store
        .transact(vec![
            WriteOp::Update(
                Update::new(Table::Main, topup_pk(&topup.id), TOPUP_SK)
                    .set("status", json!(TopupStatus::Expired))
                    .when(Condition::AttrEquals("status".into(), json!(topup.status))),
            ),
            WriteOp::Delete(Delete {
                table: Table::Main,
                pk: OPEN_TOPUPS_PK.into(),
                sk: open_sk(topup),
                condition: Condition::Always,
            }),
        ])
        .await;
    // A payment that got in first keeps the top-up paid.
    Ok(result.or_not_needed()?)
}
