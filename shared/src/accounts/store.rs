//! The account's items, written only here: the profile, the email claim, consent records, and the
//! conditions other modules' transactions put on the account.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use serde_json::Value;

use super::{Account, AccountStatus, ClientInfo, Consent, EmailClaim, KycStatus};
use crate::error::{ApiError, ErrorCode};
use crate::store::schema::sk::PROFILE as PROFILE_SK;
use crate::store::schema::{email_pk, time_sort_key, user_pk};
use crate::store::{Condition, Item, ItemStore, Put, StoreError, StoreResult, Table, Update, WriteOp, schema};

/// What a consent record says was chosen: under which policy, whether marketing mail is wanted, and the
/// occasion (`signup`, `policy_update`, `marketing_update`, `unsubscribe_link`).
pub struct ConsentChoice<'a> {
    pub policy_version: &'a str,
    pub marketing: bool,
    pub context: &'a str,
}

/// A consent record (DPDP Act evidence: which policy, which choices, when, from where), to write with the
/// change it records.
pub fn consent_put(
    account: &Account,
    choice: ConsentChoice<'_>,
    client: &ClientInfo,
    at: DateTime<Utc>,
) -> StoreResult<WriteOp> {
    let consent = Consent {
        user_id: account.id.clone(),
        policy_version: choice.policy_version.to_owned(),
        marketing_consent: choice.marketing,
        context: choice.context.into(),
        ip: client.ip.clone(),
        user_agent: client.user_agent.clone(),
        at,
    };
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(user_pk(&account.id), time_sort_key(schema::prefix::CONSENT, at), &consent, None)?,
        condition: Condition::NotExists,
    }))
}

/// The registry of open accounts, a page at a time (the account ids are the sort keys): what notices that go
/// to every account walk.
pub async fn registry_page<S: ItemStore + ?Sized>(store: &S, after: Option<String>) -> StoreResult<crate::store::Page> {
    store.query(crate::store::Query::new(Table::Main, schema::ACCOUNTS_PK).limit(100).after(after)).await
}

/// The account's consent records, as stored (an export shows them as evidence).
pub async fn consents(store: &dyn ItemStore, user_id: &str) -> StoreResult<Vec<Value>> {
    let items = crate::store::user_items(store, user_id, schema::prefix::CONSENT).await?;
    Ok(items.into_iter().map(|item| Value::Object(item.attrs)).collect())
}

/// After a closure: the consent records expire with the account's other records (`until`), and the account
/// leaves the registry of open accounts.
pub async fn after_closure(store: &dyn ItemStore, user_id: &str, until: i64) -> StoreResult<()> {
    let consents = crate::store::user_items(store, user_id, schema::prefix::CONSENT).await?;
    expire_consents(store, &consents, until).await?;
    for consent in &consents {
        // What proves consent (policy, choices, occasion, time) stays; where it was given from is a login
        // record's kind of data and is not kept beyond an open account (DPDP Act s.8(7)).
        let strip = Update::new(Table::Main, consent.pk.clone(), consent.sk.clone())
            .remove("ip")
            .remove("user_agent")
            .when(Condition::Exists);
        store.update(strip).await?;
    }
    if let Some(account) = store.get(Table::Main, &user_pk(user_id), PROFILE_SK).await? {
        let email = account.attrs.get("email").and_then(Value::as_str).unwrap_or_default().to_owned();
        let index = Item::from_record(schema::closed_email_pk(&email), user_id, &serde_json::json!({}), Some(until))?;
        store.put(Put { table: Table::Main, item: index, condition: Condition::Always }).await?;
    }
    store.delete(registry_delete(user_id)).await
}

/// The closed accounts that had `email`, still kept (newest ids last): whom a request by e-mail names once the
/// address is released.
pub async fn closed_accounts_with_email(store: &dyn ItemStore, email: &str) -> StoreResult<Vec<String>> {
    let page = store.query(crate::store::Query::new(Table::Main, schema::closed_email_pk(email)).limit(100)).await?;
    Ok(page.items.into_iter().map(|item| item.sk).collect())
}

/// The profile's KYC status, written with the KYC decision or submission that sets it, only while the account
/// is open.
pub fn kyc_status_update(user_id: &str, status: KycStatus) -> WriteOp {
    kyc_status_update_with(user_id, status, &[])
}

/// The same, with other profile fields the KYC write changes (a date of birth corrected on evidence).
pub fn kyc_status_update_with(user_id: &str, status: KycStatus, changes: &[(&'static str, Value)]) -> WriteOp {
    let update = Update::new(Table::Main, user_pk(user_id), PROFILE_SK).set("kyc_status", serde_json::json!(status));
    let update = changes.iter().fold(update, |update, (name, value)| update.set(name, value.clone()));
    WriteOp::Update(update.when(Condition::AttrEquals("status".into(), serde_json::json!(AccountStatus::Active))))
}

/// The account's profile, changed only if it is still open and still has the email and the password we
/// read: a change checked against a password that was changed meanwhile (by the owner, locking a thief
/// out) does not commit.
pub fn profile_update(account: &Account) -> Update {
    Update::new(Table::Main, user_pk(&account.id), PROFILE_SK).when(Condition::All(vec![
        Condition::AttrEquals("status".into(), serde_json::json!(AccountStatus::Active)),
        Condition::AttrEquals("email".into(), serde_json::json!(account.email)),
        Condition::AttrEquals("password_hash".into(), serde_json::json!(account.password_hash)),
    ]))
}

/// Moves the account's email claim to `new_email` (which must be free), with the change of the profile.
pub fn email_change_ops(account: &Account, new_email: &str) -> StoreResult<Vec<WriteOp>> {
    Ok(vec![email_claim(new_email, &account.id)?, email_release(&account.email, &account.id)])
}

/// Claims `email` for the account: "one email, one account" holds because the claim must not exist yet.
fn email_claim(email: &str, user_id: &str) -> StoreResult<WriteOp> {
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(email_pk(email), schema::sk::EMAIL, &EmailClaim { user_id: user_id.to_owned() }, None)?,
        condition: Condition::NotExists,
    }))
}

/// Releases the account's claim on `email` (only its own).
fn email_release(email: &str, user_id: &str) -> WriteOp {
    WriteOp::Delete(crate::store::Delete {
        table: Table::Main,
        pk: email_pk(email),
        sk: schema::sk::EMAIL.into(),
        condition: Condition::AttrEquals("user_id".into(), serde_json::json!(user_id)),
    })
}

/// After a closure: the account's consent records expire with the account.
pub async fn expire_consents<S: ItemStore + ?Sized>(store: &S, consents: &[Item], until: i64) -> StoreResult<()> {
    for consent in consents {
        let expire = Update::new(Table::Main, consent.pk.clone(), consent.sk.clone())
            .expiry(crate::store::ExpiryChange::Set(until))
            .when(Condition::Exists);
        store.update(expire).await?;
    }
    Ok(())
}

/// The check that the account is still active and its password still the one just verified: a login that
/// verified a password changed meanwhile opens no session.
pub fn require_active_with_password(user_id: &str, password_hash: &str) -> crate::store::WriteOp {
    crate::store::WriteOp::Check(crate::store::Check {
        table: Table::Main,
        pk: user_pk(user_id),
        sk: PROFILE_SK.into(),
        condition: Condition::All(vec![
            Condition::AttrEquals("status".into(), serde_json::json!(AccountStatus::Active)),
            Condition::AttrEquals("password_hash".into(), serde_json::json!(password_hash)),
        ]),
    })
}

/// A transaction step that holds only while the account is open: writes that must not outlive a closure
/// (sessions, keys, KYC changes) carry it, so a closure that commits first makes them fail.
pub fn require_active(user_id: &str) -> crate::store::WriteOp {
    crate::store::WriteOp::Check(crate::store::Check {
        table: Table::Main,
        pk: user_pk(user_id),
        sk: PROFILE_SK.into(),
        condition: Condition::AttrEquals("status".into(), serde_json::json!(AccountStatus::Active)),
    })
}

/// The closing transaction's part for the account: the profile flips to closed (only from active, and only
/// with the email it had when read), the password hash and marketing consent go, the profile expires with
/// the account window and remembers the erasure request; the email claim is released.
pub fn closure_ops(account: &Account, closed_at: DateTime<Utc>, expires_at: i64, request_sk: &str) -> Vec<WriteOp> {
    vec![
        WriteOp::Update(
            profile_update(account)
                .set("status", serde_json::json!(AccountStatus::Closed))
                .set("closed_at", serde_json::json!(closed_at))
                .set("closure_request", serde_json::json!(request_sk))
                .remove("password_hash")
                .set("marketing_consent", serde_json::json!(false))
                .expiry(crate::store::ExpiryChange::Set(expires_at)),
        ),
        email_release(&account.email, &account.id),
    ]
}

/// Takes a closed account out of the registry of open accounts (the closure's follow-up).
pub fn registry_delete(user_id: &str) -> crate::store::Delete {
    crate::store::Delete {
        table: Table::Main,
        pk: schema::ACCOUNTS_PK.into(),
        sk: user_id.to_owned(),
        condition: Condition::Always,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateAccountError {
    #[error("email already registered")]
    EmailTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Account persistence.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates the account, its email claim, its first consent record and `extra` (the verification
    /// link and its message) atomically.
    async fn create_account(
        &self,
        account: &Account,
        consent: &Consent,
        extra: Vec<WriteOp>,
    ) -> Result<(), CreateAccountError>;
    async fn account(&self, user_id: &str) -> StoreResult<Option<Account>>;
    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>>;
    /// Whether an account holds the email's claim.
    async fn email_claimed(&self, email: &str) -> StoreResult<bool>;
}

#[async_trait]
impl<T: ItemStore + ?Sized> AccountStore for T {
    async fn create_account(
        &self,
        account: &Account,
        consent: &Consent,
        extra: Vec<WriteOp>,
    ) -> Result<(), CreateAccountError> {
        let pk = user_pk(&account.id);
        let mut ops = vec![
            email_claim(&account.email, &account.id)?,
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(&pk, PROFILE_SK, account, None)?,
                condition: Condition::NotExists,
            }),
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(&pk, time_sort_key(schema::prefix::CONSENT, consent.at), consent, None)?,
                condition: Condition::NotExists,
            }),
            // The registry of open accounts, walked by notices that go to everyone.
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(schema::ACCOUNTS_PK, &account.id, &serde_json::json!({}), None)?,
                condition: Condition::NotExists,
            }),
        ];
        ops.extend(extra);
        match self.transact(ops).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed) => Err(CreateAccountError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    async fn account(&self, user_id: &str) -> StoreResult<Option<Account>> {
        self.get(Table::Main, &user_pk(user_id), PROFILE_SK).await?.map(|item| item.record()).transpose()
    }

    async fn email_claimed(&self, email: &str) -> StoreResult<bool> {
        Ok(self.get(Table::Main, &email_pk(email), schema::sk::EMAIL).await?.is_some())
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>> {
        let Some(claim) = self.get(Table::Main, &email_pk(email), schema::sk::EMAIL).await? else {
            return Ok(None);
        };
        let claim: EmailClaim = claim.record()?;
        self.account(&claim.user_id).await
    }
}

/// The answer when another account has the email (signup, email change).
pub(crate) fn email_taken() -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::EmailTaken,
        message: "an account with this email already exists".into(),
        param: Some("email".into()),
    }
}
