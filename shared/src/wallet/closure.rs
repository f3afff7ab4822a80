//! A closed account's wallet: closed in the closing transaction, its unspent balance moved to the account's
//! single refund request, and kept in step with it as late money arrives or leaves.

use crate::ports::Ports;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::closure_refunds;
use super::ledger::{CREDIT_ATTEMPTS, LedgerEntry, LedgerKind, entry_put};
use super::{CLOSED, WALLET_SK, WALLETS_PK, Wallet, payment_expiry};
use crate::accounts::user_pk;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::money::format_inr;
use crate::store::schema::{self};
use crate::store::{Condition, Conditional, Item, ItemStore, Put, Query, StoreResult, Table, Update, WriteOp};

const REFUND_REQUESTS_PK: &str = schema::REFUND_REQUESTS_PK;

/// The unspent balance of a closed account, waiting for an operator to refund it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundRequest {
    pub user_id: String,
    /// Wallet units.
    pub amount: i64,
    pub amount_inr: String,
    pub status: String,
    pub requested_at: DateTime<Utc>,
    /// The ledger entry that moved the balance here.
    pub ledger_entry: String,
    /// Wallet units asked of Razorpay as refunds to the account's payments and not processed yet
    /// (`closure_refunds`); `amount` still counts them.
    #[serde(default)]
    pub refunding: i64,
}

/// The closing transaction's part for the wallet, if there is one: it is closed (no new holds) and expires
/// with the payments window from now; its available balance (what no running call holds) leaves through a
/// ledger entry into the account's single refund request. Holds still running settle as usual. The write
/// holds only if the wallet has not moved since `wallet` was read. Returns the ops and the refund.
pub fn closure_ops(
    config: &Config,
    user_id: &str,
    wallet: Option<&Item>,
    at: DateTime<Utc>,
) -> StoreResult<(Vec<WriteOp>, i64)> {
    let wallet_until =
        config.retention.expiry(crate::retention::ItemClass::Wallet, at).unwrap_or_else(|| payment_expiry(config, at));
    let Some(item) = wallet else {
        // No money yet: the wallet is created closed, so a payment arriving later lands on a closed wallet
        // (and in the refund request), never on a fresh open one.
        let closed = json!({ "balance": 0, "held": 0, "available": 0, CLOSED: true });
        return Ok((
            vec![
                WriteOp::Put(Put {
                    table: Table::Main,
                    item: Item::from_record(user_pk(user_id), WALLET_SK, &closed, Some(wallet_until))?,
                    condition: Condition::NotExists,
                }),
                WriteOp::Put(Put {
                    table: Table::Main,
                    item: Item::from_record(WALLETS_PK, user_id, &json!({ "user_id": user_id }), Some(wallet_until))?,
                    condition: Condition::Always,
                }),
            ],
            0,
        ));
    };
    let read: Wallet = item.record()?;
    let refund = read.available.max(0);
    let closing = Update::new(Table::Main, user_pk(user_id), WALLET_SK)
        .set(CLOSED, json!(true))
        .expiry(crate::store::ExpiryChange::Set(wallet_until));
    // The refunds job learns of it from the closure's follow-up (`closure_refunds::mark_due`): the closing
    // transaction is at DynamoDB Local's limit of 10 writes.
    let expires_at = payment_expiry(config, at);
    let movement = RefundMove { user_id, wallet: &read, request: None, moved: refund, at, expires_at, mark_due: false };
    let ops = refund_move(movement, closing)?;
    Ok((ops, refund))
}

/// Moves `moved` wallet units (negative: back) between the wallet and the account's refund request, in one
/// transaction's ops: `wallet_update` (plus the move, conditioned on the balance and held read), the ledger
/// entry, and the request (created, or changed conditioned on the amount read). Nothing but the wallet
/// update when nothing moves. Money into the request also marks it due for the refunds job when `mark_due`.
struct RefundMove<'a> {
    user_id: &'a str,
    /// The wallet as read: the move is conditioned on its balance and held amount.
    wallet: &'a Wallet,
    /// The account's refund request as read, if it has one.
    request: Option<&'a RefundRequest>,
    moved: i64,
    at: DateTime<Utc>,
    /// When the ledger entry and the request expire (the payment records' retention).
    expires_at: i64,
    mark_due: bool,
}

fn refund_move(movement: RefundMove<'_>, wallet_update: Update) -> StoreResult<Vec<WriteOp>> {
    let RefundMove { user_id, wallet, request, moved, at, expires_at, mark_due } = movement;
    let unchanged = Condition::All(vec![
        Condition::AttrEquals("balance".into(), json!(wallet.balance)),
        Condition::AttrEquals("held".into(), json!(wallet.held)),
    ]);
    let mut ops = vec![WriteOp::Update(wallet_update.add("balance", -moved).add("available", -moved).when(unchanged))];
    if moved == 0 {
        return Ok(ops);
    }
    let reference = "refund request of the closed account";
    let entry = LedgerEntry::new(LedgerKind::ClosureRefund, -moved, wallet.balance - moved, reference, at);
    let request_op = match request {
        Some(existing) => WriteOp::Update(
            Update::new(Table::Main, REFUND_REQUESTS_PK, user_id)
                .add("amount", moved)
                .set("amount_inr", json!(format_inr(existing.amount + moved)))
                .when(closure_refunds::unchanged(existing)),
        ),
        None => {
            let created = RefundRequest {
                user_id: user_id.to_owned(),
                amount: moved,
                amount_inr: format_inr(moved),
                status: "requested".into(),
                requested_at: at,
                ledger_entry: entry.id.clone(),
                refunding: 0,
            };
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(REFUND_REQUESTS_PK, user_id, &created, Some(expires_at))?,
                condition: Condition::NotExists,
            })
        }
    };
    ops.push(entry_put(user_id, &entry, expires_at)?);
    ops.push(request_op);
    if moved > 0 && mark_due {
        // More is owed: the refunds job sends it back to the account's payments as far as Razorpay can.
        ops.push(WriteOp::Put(closure_refunds::due_put(user_id, expires_at)?));
    }
    Ok(ops)
}

/// Keeps a closed account's refund request in step with its wallet. Money that reaches the wallet after the
/// closure (a late payment, a call's unused hold, a dispute won) joins the request; money that leaves it (a
/// refund, a dispute opened or lost) comes out of it, so an operator never pays out what the bank or
/// Razorpay already returned. The request's `amount` is what is still owed: paying it out must lower it, in
/// a write conditioned on the amount read, like this one. What an unpaid request cannot cover stays as a debt on
/// the wallet (the ledger shows it). Each move is a ledger entry in one transaction with the wallet and the
/// request, conditioned on both, so running it any number of times, concurrently, moves money once.
pub async fn sync_closed_wallet(ports: &Ports, user_id: &str) -> ApiResult<()> {
    let store = ports.store();
    let clock = ports.clock();
    let config = ports.config();
    for _ in 0..CREDIT_ATTEMPTS {
        let Some(item) = store.get(Table::Main, &user_pk(user_id), WALLET_SK).await? else { return Ok(()) };
        if item.attrs.get(CLOSED) != Some(&json!(true)) {
            return Ok(());
        }
        let wallet: Wallet = item.record()?;
        let request = refund_request(store, user_id).await?;
        // What refunds under way will pay is not unpaid any more.
        let unpaid = request.as_ref().map_or(0, |r| r.amount - r.refunding).max(0);
        // Positive: into the request; negative: back out of it, as far as it is unpaid.
        let moved = if wallet.available > 0 { wallet.available } else { -unpaid.min(-wallet.available) };
        if moved == 0 {
            if wallet.available < 0 {
                tracing::warn!(%user_id, available = wallet.available, "a closed account owes money its refund request cannot cover");
            }
            return Ok(());
        }
        let now = clock.now();
        let plain = Update::new(Table::Main, user_pk(user_id), WALLET_SK);
        let expires_at = payment_expiry(config, now);
        let request = request.as_ref();
        let movement = RefundMove { user_id, wallet: &wallet, request, moved, at: now, expires_at, mark_due: true };
        let ops = refund_move(movement, plain)?;
        if store.transact(ops).await.applied()?.is_some() {
            tracing::warn!(%user_id, moved, "closed account's refund request adjusted");
            return Ok(());
        }
    }
    Err(ApiError::Unavailable("the closed wallet is busy; its refund request is adjusted on the next run".into()))
}

/// The refund request of a closed account, if it had a balance to refund.
pub async fn refund_request<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> StoreResult<Option<RefundRequest>> {
    store.get(Table::Main, REFUND_REQUESTS_PK, user_id).await?.map(|i| i.record()).transpose()
}

/// After a closure (idempotent): the wallet's registry entry expires with the wallet, and a refund owed is
/// marked for the refunds job.
pub async fn after_closure(ports: &Ports, user_id: &str, until: i64) -> ApiResult<()> {
    expire_registry(ports.store(), user_id, until).await?;
    closure_refunds::mark_due(ports, ports.now(), user_id).await
}

/// After a closure commits: the wallet's registry entry (walked by the stale-hold sweeper) expires with it.
pub async fn expire_registry<S: ItemStore + ?Sized>(store: &S, user_id: &str, until: i64) -> StoreResult<()> {
    let registry = Update::new(Table::Main, WALLETS_PK, user_id)
        .expiry(crate::store::ExpiryChange::Set(until))
        .when(Condition::Exists);
    store.update(registry).await.or_not_needed()
}

/// A closed account's refund request as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct RefundRequestView {
    pub user_id: String,
    /// Still owed, wallet units (0 once paid out, until money reaches the closed wallet again).
    pub amount: i64,
    pub amount_inr: String,
    /// `open` while anything is owed, else `paid`.
    pub status: &'static str,
    /// Of `amount`, what is being refunded to the account's payments through Razorpay right now.
    pub refunding: i64,
    pub requested_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_payout: Option<Value>,
    /// While anything is owed: the money a bank payout transfers for it, paise (the credit owed with the GST
    /// each payment was charged on it, which the payout's refund vouchers reverse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_paise: Option<i64>,
    /// Of `transfer_paise`, the GST.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gst_paise: Option<i64>,
}

/// `GET /v1/admin/refund-requests`: every closed account's refund request, a page at a time.
pub async fn refund_requests<S: ItemStore + ?Sized>(
    store: &S,
    limit: u32,
    after: Option<String>,
) -> ApiResult<(Vec<RefundRequestView>, Option<String>)> {
    let page = store.query(Query::new(Table::Main, REFUND_REQUESTS_PK).limit(limit).after(after)).await?;
    let mut views = page.items.iter().map(refund_request_view).collect::<StoreResult<Vec<_>>>()?;
    for view in views.iter_mut().filter(|v| v.amount > 0) {
        super::payouts::with_transfer(store, view).await?;
    }
    Ok((views, page.next))
}

pub(super) fn refund_request_view(item: &Item) -> StoreResult<RefundRequestView> {
    let request: RefundRequest = item.record()?;
    Ok(RefundRequestView {
        status: if request.amount > 0 { "open" } else { "paid" },
        user_id: request.user_id,
        amount: request.amount,
        amount_inr: request.amount_inr,
        refunding: request.refunding,
        requested_at: crate::accounts::timestamp(request.requested_at),
        last_payout: item.attrs.get("last_payout").cloned(),
        transfer_paise: None,
        gst_paise: None,
    })
}
