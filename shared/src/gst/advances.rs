//! Advances taxed and not yet adjusted: what receipt vouchers charged GST on and no tax invoice has set a
//! supply against, nor a refund voucher given back. A month's tax invoice adjusts its supply against it, so
//! no rupee is taxed twice (the tax on an advance is paid when it is received, CGST Act s.13(2); the
//! invoice for the supply records that, rather than charging it again).
//!
//! Item: `USER#<id>` / `ADVANCES`, `{"unadjusted_paise"}`; kept as long as the payment records, from its last
//! change.

use serde_json::{Value, json};

use crate::accounts::user_pk;
use crate::error::ApiResult;
use crate::ports::Ports;
use crate::retention::ItemClass;
use crate::store::schema;
use crate::store::{Condition, Conditional, ExpiryChange, Item, ItemStore, Put, Table, Update, WriteOp};

const ADVANCES_SK: &str = schema::sk::ADVANCES;
const UNADJUSTED: &str = "unadjusted_paise";

/// What of the account's taxed advances is still unadjusted, paise.
pub async fn unadjusted(store: &dyn ItemStore, user_id: &str) -> ApiResult<i64> {
    let item = store.get(Table::Main, &user_pk(user_id), ADVANCES_SK).await?;
    Ok(item.and_then(|i| i.attrs.get(UNADJUSTED).and_then(Value::as_i64)).unwrap_or(0).max(0))
}

/// Makes sure the account's item exists (an update never creates one), so the documents' transactions can
/// move it.
pub(super) async fn ensure(ports: &Ports, user_id: &str) -> ApiResult<()> {
    let now = ports.clock().now();
    let expires_at = ports.config().retention.expiry(ItemClass::AdvanceBalance, now);
    let item = Item::from_record(user_pk(user_id), ADVANCES_SK, &json!({ UNADJUSTED: 0 }), expires_at)?;
    let put = Put { table: Table::Main, item, condition: Condition::NotExists };
    Ok(ports.store().put(put).await.or_not_needed()?)
}

/// `paise` more advance taxed (a receipt voucher), in its transaction.
pub(super) fn received(ports: &Ports, user_id: &str, paise: i64) -> WriteOp {
    change(ports, user_id, paise, Condition::Exists)
}

/// `paise` of advance adjusted (a tax invoice) or given back (a refund voucher), in its transaction: never more
/// than is unadjusted.
pub(super) fn taken(ports: &Ports, user_id: &str, paise: i64) -> WriteOp {
    change(ports, user_id, -paise, Condition::AttrAtLeast(UNADJUSTED.into(), paise))
}

fn change(ports: &Ports, user_id: &str, delta: i64, condition: Condition) -> WriteOp {
    let now = ports.clock().now();
    let expiry = match ports.config().retention.expiry(ItemClass::AdvanceBalance, now) {
        Some(at) => ExpiryChange::Set(at),
        None => ExpiryChange::Keep,
    };
    WriteOp::Update(
        Update::new(Table::Main, user_pk(user_id), ADVANCES_SK).add(UNADJUSTED, delta).expiry(expiry).when(condition),
    )
}
