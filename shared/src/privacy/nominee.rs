//! Nomination (DPDP Act, 2023, s.14): a person may name someone to exercise their rights on their death or
//! incapacity. One nominee per account (`USER#<id>` / `NOMINEE`), set, changed or removed by the account,
//! whose owner is told by e-mail each time (a stolen session cannot name a nominee unnoticed). Erased at
//! closure: once the account is closed there are no rights left to exercise for it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::PrivacyContext;
use super::correction::active_account;
use crate::accounts::{AccountStore, normalize_email, require_active, user_pk};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::store::schema::sk;
use crate::store::{Condition, Delete, Item, Put, Table, WriteOp};

const MAX_NAME_CHARS: usize = 200;

/// The nominee as stored and shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Nominee {
    pub name: String,
    pub email: String,
    pub updated_at: DateTime<Utc>,
}

/// What `PUT /v1/account/nominee` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NomineeRequest {
    pub name: String,
    pub email: String,
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::invalid(ErrorCode::InvalidNominee, field, message)
}

/// The account's nominee, if one is named.
pub async fn nominee(ctx: &PrivacyContext, user_id: &str) -> ApiResult<Option<Nominee>> {
    let item = ctx.ports.store().get(Table::Main, &user_pk(user_id), sk::NOMINEE).await?;
    Ok(item.map(|i| i.record()).transpose()?)
}

/// Names (or replaces) the nominee, and tells the account's owner.
pub async fn put_nominee(ctx: &PrivacyContext, user_id: &str, request: NomineeRequest) -> ApiResult<Nominee> {
    let store = ctx.ports.store();
    let account = active_account(store.account(user_id).await?)?;
    let name = crate::accounts::printable(&request.name, MAX_NAME_CHARS)
        .ok_or_else(|| invalid("name", "name must be 1 to 200 printable characters"))?
        .to_owned();
    let email = normalize_email(&request.email).map_err(|_| invalid("email", "email must be an e-mail address"))?;
    if email == account.email {
        return Err(invalid("email", "the nominee is someone else: their e-mail cannot be the account's own"));
    }
    let now = ctx.ports.clock.now();
    let nominee = Nominee { name, email, updated_at: now };
    let item = Item::from_record(user_pk(user_id), sk::NOMINEE, &nominee, None)?;
    let told = OutboxMail::new(MailKind::NomineeChanged, user_id, now)
        .param("change", "named")
        .param("nominee", format!("{} <{}>", nominee.name, nominee.email));
    let ops = vec![
        WriteOp::Put(Put { table: Table::Main, item, condition: Condition::Always }),
        enqueue(&told)?,
        require_active(user_id),
    ];
    store.transact(ops).await?;
    Ok(nominee)
}

/// Removes the nominee (nothing to remove is not an error), and tells the owner when there was one.
pub async fn remove_nominee(ctx: &PrivacyContext, user_id: &str) -> ApiResult<()> {
    let store = ctx.ports.store();
    active_account(store.account(user_id).await?)?;
    if nominee(ctx, user_id).await?.is_none() {
        return Ok(());
    }
    let told = OutboxMail::new(MailKind::NomineeChanged, user_id, ctx.ports.clock.now())
        .param("change", "removed")
        .param("nominee", "nobody");
    store.transact(vec![erase_at_closure(user_id), enqueue(&told)?, require_active(user_id)]).await?;
    Ok(())
}

/// The nominee's deletion (at closure, or removed by the owner).
pub fn erase_at_closure(user_id: &str) -> WriteOp {
    WriteOp::Delete(Delete {
        table: Table::Main,
        pk: user_pk(user_id),
        sk: sk::NOMINEE.into(),
        condition: Condition::Always,
    })
}
