//! KYC's items: the record, the queue, the document claims, the decisions and the vault entries, each
//! written only here, and the retention rule applied when an account closes.

use async_trait::async_trait;
use chrono::{DateTime, Months, Utc};
use serde_json::json;

use super::submit::held_claims;
use super::{Decision, DecisionRecord, DocumentKind, KYC_SK, KycRecord, VaultEntry};
use crate::accounts::{KycStatus, time_sort_key, user_pk};
use crate::error::{ApiError, ApiResult};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::store::schema::{self, kyc_claim_pk as claim_pk, vault_pk};
use crate::store::{
    Condition, Conditional, Delete, ExpiryChange, Item, ItemStore, Put, Query, SortKeyRange, StoreError, StoreResult,
    Table, Update, WriteOp,
};

const CLAIM_SK: &str = schema::sk::CLAIM;
pub(super) const DECISION_PREFIX: &str = schema::prefix::KYC_DECISION;
/// Decisions are rare (one per submission); a transaction holds at most 100 writes.
const MAX_DECISIONS_KEPT: u32 = 90;
const VAULT_SK: &str = schema::sk::SECRET;

fn owned_by(user_id: &str) -> Condition {
    Condition::AbsentOrEquals("user_id".into(), json!(user_id))
}

fn put_record(record: &KycRecord, previous_revision: Option<i64>) -> StoreResult<WriteOp> {
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(user_pk(&record.user_id), KYC_SK, record, None)?,
        condition: match previous_revision {
            Some(revision) => Condition::AttrEquals("revision".into(), json!(revision)),
            None => Condition::NotExists,
        },
    }))
}

/// The account's KYC status, written only while the account is open: a KYC change racing the closure
/// fails instead of rewriting what the closure gave its retention expiry.
pub(super) fn queue_sk(record: &KycRecord) -> String {
    format!("{:013}#{}", record.submitted_at.timestamp_millis().max(0), record.user_id)
}

/// The submission's place in the operators' queue.
fn queue_put(record: &KycRecord) -> StoreResult<WriteOp> {
    let entry = json!({ "user_id": record.user_id, "submitted_at": record.submitted_at });
    let expires_at = (record.submitted_at + crate::retention::KYC_QUEUE_LIFETIME).timestamp();
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(schema::KYC_QUEUE_PK, queue_sk(record), &entry, Some(expires_at))?,
        condition: Condition::Always,
    }))
}

/// The message a KYC outcome sends (approved, or rejected with the reason); none while it is pending.
fn outcome_notice(record: &KycRecord) -> StoreResult<Option<WriteOp>> {
    let at = record.decided_at.or(record.verified_at).unwrap_or(record.submitted_at);
    let mail = match record.status {
        KycStatus::Verified => OutboxMail::new(MailKind::KycApproved, &record.user_id, at),
        KycStatus::Rejected => OutboxMail::new(MailKind::KycRejected, &record.user_id, at)
            .param("reason", record.rejection_reason.clone().unwrap_or_else(|| "not given".into())),
        KycStatus::Pending | KycStatus::NotSubmitted => return Ok(None),
    };
    enqueue(&mail).map(Some)
}

fn release_claim(user_id: &str, fingerprint: &str) -> WriteOp {
    WriteOp::Delete(Delete {
        table: Table::Main,
        pk: claim_pk(fingerprint),
        sk: CLAIM_SK.into(),
        condition: owned_by(user_id),
    })
}

/// A validated submission, ready to be written.
pub struct Submission {
    pub record: KycRecord,
    pub vault: Vec<(String, VaultEntry)>,
    /// Fingerprints this account holds claims on that the submission no longer backs.
    pub releases: Vec<String>,
}

fn claim_put(user_id: &str, kind: DocumentKind, fingerprint: &str) -> StoreResult<WriteOp> {
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(claim_pk(fingerprint), CLAIM_SK, &json!({ "user_id": user_id, "kind": kind }), None)?,
        condition: owned_by(user_id),
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum WriteConflict {
    #[error("a condition failed")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn conflict(e: StoreError) -> WriteConflict {
    match e {
        StoreError::ConditionFailed => WriteConflict::Conflict,
        other => WriteConflict::Store(other),
    }
}

/// KYC persistence.
#[async_trait]
pub trait KycStore: Send + Sync {
    async fn kyc_record(&self, user_id: &str) -> StoreResult<Option<KycRecord>>;
    /// Who holds a document fingerprint, if anyone.
    async fn claim_holder(&self, fingerprint: &str) -> StoreResult<Option<String>>;
    async fn vault_entry(&self, reference: &str) -> StoreResult<Option<VaultEntry>>;
    /// Writes a submission atomically: vault entries, record and account status, the claims when it is
    /// verified at once, and drops what the previous submission held.
    async fn save_submission(&self, new: &Submission, previous: Option<&KycRecord>) -> Result<(), WriteConflict>;
    /// Writes a decision atomically: record, account status, audit entry, the claims on approval, and the
    /// release of `releases` (claims the account holds that the decision ends).
    async fn save_decision(
        &self,
        record: &KycRecord,
        previous_revision: i64,
        audit: &DecisionRecord,
        releases: &[String],
    ) -> Result<(), WriteConflict>;
}

#[async_trait]
impl<T: ItemStore + ?Sized> KycStore for T {
    async fn kyc_record(&self, user_id: &str) -> StoreResult<Option<KycRecord>> {
        self.get(Table::Main, &user_pk(user_id), KYC_SK).await?.map(|i| i.record()).transpose()
    }

    async fn claim_holder(&self, fingerprint: &str) -> StoreResult<Option<String>> {
        let item = self.get(Table::Main, &claim_pk(fingerprint), CLAIM_SK).await?;
        Ok(item.and_then(|i| i.attrs.get("user_id").and_then(|v| v.as_str()).map(str::to_owned)))
    }

    async fn vault_entry(&self, reference: &str) -> StoreResult<Option<VaultEntry>> {
        self.get(Table::Vault, &vault_pk(reference), VAULT_SK).await?.map(|i| i.record()).transpose()
    }

    async fn save_submission(&self, new: &Submission, previous: Option<&KycRecord>) -> Result<(), WriteConflict> {
        let record = &new.record;
        let user = record.user_id.as_str();
        let mut ops = Vec::new();
        for fingerprint in &new.releases {
            ops.push(release_claim(user, fingerprint));
        }
        for kind in [DocumentKind::Pan, DocumentKind::Aadhaar] {
            if record.status == KycStatus::Verified {
                ops.push(claim_put(user, kind, record.fingerprint(kind))?);
            }
            if let Some(previous) = previous {
                ops.push(WriteOp::Delete(Delete {
                    table: Table::Vault,
                    pk: vault_pk(previous.reference(kind)),
                    sk: VAULT_SK.into(),
                    condition: Condition::Always,
                }));
            }
        }
        for (reference, entry) in &new.vault {
            ops.push(WriteOp::Put(Put {
                table: Table::Vault,
                item: Item::from_record(vault_pk(reference), VAULT_SK, entry, None)?,
                condition: Condition::NotExists,
            }));
        }
        ops.push(put_record(record, previous.map(|p| p.revision))?);
        ops.push(crate::accounts::kyc_status_update(user, record.status));
        ops.extend(outcome_notice(record)?);
        if record.status == KycStatus::Pending {
            ops.push(queue_put(record)?);
        }
        self.transact(ops).await.map_err(conflict)
    }

    async fn save_decision(
        &self,
        record: &KycRecord,
        previous_revision: i64,
        audit: &DecisionRecord,
        releases: &[String],
    ) -> Result<(), WriteConflict> {
        let user = record.user_id.as_str();
        let mut ops = vec![
            put_record(record, Some(previous_revision))?,
            crate::accounts::kyc_status_update(user, record.status),
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(user_pk(user), time_sort_key(DECISION_PREFIX, audit.at), audit, None)?,
                condition: Condition::NotExists,
            }),
        ];
        if audit.decision == Decision::Approve {
            // Uniqueness is decided here, atomically with the verification.
            for kind in [DocumentKind::Pan, DocumentKind::Aadhaar] {
                ops.push(claim_put(user, kind, record.fingerprint(kind))?);
            }
        }
        for fingerprint in releases {
            ops.push(release_claim(user, fingerprint));
        }
        ops.extend(outcome_notice(record)?);
        ops.push(WriteOp::Delete(Delete {
            table: Table::Main,
            pk: schema::KYC_QUEUE_PK.into(),
            sk: queue_sk(record),
            condition: Condition::Always,
        }));
        self.transact(ops).await.map_err(conflict)
    }
}

/// The retention rule for closed accounts, as the closing transaction's part: the KYC record expires
/// `retention_years` after closure and the claims this account holds are released, so their owner can
/// verify a new account (at most three writes). Returns the ops and the expiry (no ops without KYC data).
/// The vault entries and operator decisions follow once the closure commits ([`expire_after_closure`]).
pub async fn closure_ops<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    closed_at: DateTime<Utc>,
    retention_years: u32,
) -> ApiResult<(Vec<WriteOp>, Option<i64>)> {
    // Each op holds only if KYC has not changed since it was read: a verification committing between the
    // read and the closure would otherwise leave claims nobody releases.
    let Some(record) = store.kyc_record(user_id).await? else {
        let unchanged = WriteOp::Check(crate::store::Check {
            table: Table::Main,
            pk: user_pk(user_id),
            sk: KYC_SK.into(),
            condition: Condition::NotExists,
        });
        return Ok((vec![unchanged], None));
    };
    let expires_at = closed_at
        .checked_add_months(Months::new(retention_years.saturating_mul(12)))
        .ok_or_else(|| ApiError::Internal("KYC retention overflows the calendar".into()))?
        .timestamp();
    let mut ops = vec![WriteOp::Update(
        Update::new(Table::Main, user_pk(user_id), KYC_SK)
            .expiry(ExpiryChange::Set(expires_at))
            .when(Condition::AttrEquals("revision".into(), json!(record.revision))),
    )];
    // Only claims this account holds: a number it never verified may be someone else's.
    ops.extend(held_claims(store, user_id, &record).await?.iter().map(|f| release_claim(user_id, f)));
    Ok((ops, Some(expires_at)))
}

/// Until when a closed account's KYC data is kept: the KYC record's expiry (`None` without KYC data).
pub async fn retained_until(store: &dyn ItemStore, user_id: &str) -> StoreResult<Option<i64>> {
    Ok(store.get(Table::Main, &user_pk(user_id), KYC_SK).await?.and_then(|item| item.expires_at))
}

/// The operators' decisions on the account's submissions, and their reveals, as stored (for its export).
pub async fn decisions(store: &dyn ItemStore, user_id: &str) -> StoreResult<Vec<serde_json::Value>> {
    let items = crate::store::user_items(store, user_id, DECISION_PREFIX).await?;
    Ok(items.into_iter().map(|item| serde_json::Value::Object(item.attrs)).collect())
}

/// After a closure (idempotent): the vault entries and the operators' decisions expire with the KYC record.
pub async fn after_closure(store: &dyn ItemStore, user_id: &str) -> StoreResult<()> {
    match retained_until(store, user_id).await? {
        Some(until) => expire_after_closure(store, user_id, until).await,
        None => Ok(()),
    }
}

/// After a closure commits (idempotent): the vault entries and operator decisions expire with the KYC
/// record.
pub async fn expire_after_closure<S: ItemStore + ?Sized>(store: &S, user_id: &str, expires_at: i64) -> StoreResult<()> {
    let expire = |table: Table, pk: String, sk: String| {
        Update::new(table, pk, sk).expiry(ExpiryChange::Set(expires_at)).when(Condition::Exists)
    };
    let mut targets = Vec::new();
    if let Some(record) = store.kyc_record(user_id).await? {
        for kind in [DocumentKind::Pan, DocumentKind::Aadhaar] {
            targets.push(expire(Table::Vault, vault_pk(record.reference(kind)), VAULT_SK.into()));
        }
    }
    let decisions = Query::new(Table::Main, user_pk(user_id))
        .range(SortKeyRange::Prefix(DECISION_PREFIX.into()))
        .limit(MAX_DECISIONS_KEPT);
    for decision in store.query(decisions).await?.items {
        targets.push(expire(Table::Main, decision.pk, decision.sk));
    }
    for update in targets {
        // A vault entry a resubmission already replaced needs nothing.
        store.update(update).await.or_not_needed()?;
    }
    Ok(())
}

/// The retention rule applied on its own (the closure applies it inside its transaction): returns the
/// expiry set, if there was KYC data.
pub async fn retain_after_closure<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    closed_at: DateTime<Utc>,
    retention_years: u32,
) -> ApiResult<Option<i64>> {
    let (ops, expires_at) = closure_ops(store, user_id, closed_at, retention_years).await?;
    let Some(expires_at) = expires_at else { return Ok(None) };
    store.transact(ops).await?;
    expire_after_closure(store, user_id, expires_at).await?;
    Ok(Some(expires_at))
}
