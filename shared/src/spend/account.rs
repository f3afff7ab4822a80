//! The account's monthly spend limit (`SPEND#account#<user id>` / `LIMIT`, `monthly` in paise), set with
//! `PATCH /v1/wallet`. Inference reads it beside the key when it looks a key up (so a change reaches
//! every instance within the key cache's lifetime) and counts the account's calls in its month.

use serde::{Deserialize, Serialize};

use super::limits::checked_paise;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::schema::{account_spend_pk, sk};
use crate::store::{Condition, Conditional, Delete, Item, ItemStore, Put, StoreResult, Table, WriteOp};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct AccountLimit {
    monthly: i64,
}

/// The account's monthly limit in paise, if it set one.
pub async fn account_monthly_limit<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> StoreResult<Option<i64>> {
    let item = store.get(Table::Main, &account_spend_pk(user_id), sk::LIMIT).await?;
    Ok(item.map(|i| i.record::<AccountLimit>()).transpose()?.map(|limit| limit.monthly))
}

/// Sets (or, with `None`, removes) the account's monthly limit; only while the account is open.
pub async fn set_account_monthly_limit<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    paise: Option<i64>,
) -> ApiResult<()> {
    let paise = checked_paise(paise, "monthly_spend_limit_paise", "monthly_spend_limit_paise")?;
    let write = match paise {
        Some(monthly) => WriteOp::Put(Put {
            table: Table::Main,
            item: Item::from_record(account_spend_pk(user_id), sk::LIMIT, &AccountLimit { monthly }, None)?,
            condition: Condition::Always,
        }),
        None => erase_account_limit(user_id),
    };
    let written = store.transact(vec![crate::accounts::require_active(user_id), write]).await.applied()?;
    written.ok_or_else(|| ApiError::Conflict {
        code: ErrorCode::AccountClosed,
        message: "the account is closed".into(),
        param: None,
    })
}

/// The closure's (and the limit's removal's) write: the account's limit goes.
pub fn erase_account_limit(user_id: &str) -> WriteOp {
    WriteOp::Delete(Delete {
        table: Table::Main,
        pk: account_spend_pk(user_id),
        sk: sk::LIMIT.into(),
        condition: Condition::Always,
    })
}
