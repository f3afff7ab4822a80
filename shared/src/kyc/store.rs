//! KYC's items: the record, the queue, the document claims, the decisions and the vault entries, each
//! written only here, and the retention rule applied when an account closes.

use async_trait::async_trait;
use chrono::{DateTime, Months, Utc};
use serde_json::json;

use super::{ConsentRecord, DecisionRecord, DocumentKind, KYC_SK, KycRecord, VaultEntry};
use crate::accounts::{KycStatus, time_sort_key, user_pk};
use crate::error::{ApiError, ApiResult};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::store::schema::{self, kyc_claim_pk as claim_pk, vault_pk};
use crate::store::{
    Condition, Conditional, Delete, ExpiryChange, Item, ItemStore, Put, Query, StoreError, StoreResult, Table, Update,
    WriteOp,
};

const CLAIM_SK: &str = schema::sk::CLAIM;
pub(super) const DECISION_PREFIX: &str = schema::prefix::KYC_DECISION;
pub(super) const CONSENT_PREFIX: &str = schema::prefix::KYC_CONSENT;
const VAULT_SK: &str = schema::sk::SECRET;
const ATTEMPT_SK: &str = schema::sk::ATTEMPT;

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

/// The submission's place in a singleton index (the operators' queue, the jobs' retries): oldest first.
pub(super) fn index_sk(record: &KycRecord) -> String {
    format!("{:013}#{}", record.submitted_at.timestamp_millis().max(0), record.user_id)
}

fn index_put(pk: &str, record: &KycRecord) -> StoreResult<WriteOp> {
    let entry = json!({ "user_id": record.user_id, "submitted_at": record.submitted_at });
    // From the submission, or from a correction's request to check again (an old record's entry would be born
    // expired, and never read).
    let since = record.pan.requested_at.map_or(record.submitted_at, |at| at.max(record.submitted_at));
    let expires_at = (since + crate::retention::KYC_QUEUE_LIFETIME).timestamp();
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(pk, index_sk(record), &entry, Some(expires_at))?,
        condition: Condition::Always,
    }))
}

fn index_delete(pk: &str, record: &KycRecord) -> WriteOp {
    WriteOp::Delete(Delete { table: Table::Main, pk: pk.into(), sk: index_sk(record), condition: Condition::Always })
}

/// The message a KYC outcome sends (approved, or rejected with the reason); none while it is undecided.
fn outcome_notice(record: &KycRecord) -> StoreResult<Option<WriteOp>> {
    let at = record.decided_at.or(record.verified_at).unwrap_or(record.submitted_at);
    let mail = match record.status {
        KycStatus::Verified => OutboxMail::new(MailKind::KycApproved, &record.user_id, at),
        KycStatus::Rejected => OutboxMail::new(MailKind::KycRejected, &record.user_id, at)
            .param("reason", record.rejection_reason.clone().unwrap_or_else(|| "not given".into())),
        KycStatus::Pending | KycStatus::InReview | KycStatus::NotSubmitted => return Ok(None),
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

fn claim_put(user_id: &str, kind: DocumentKind, fingerprint: &str) -> StoreResult<WriteOp> {
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(claim_pk(fingerprint), CLAIM_SK, &json!({ "user_id": user_id, "kind": kind }), None)?,
        condition: owned_by(user_id),
    }))
}

fn vault_delete(reference: &str) -> WriteOp {
    WriteOp::Delete(Delete {
        table: Table::Vault,
        pk: vault_pk(reference),
        sk: VAULT_SK.into(),
        condition: Condition::Always,
    })
}

/// An open DigiLocker session: whose it is, until the provider's link is long expired.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DigilockerSession {
    pub user_id: String,
    pub verification_id: String,
    pub started_at: DateTime<Utc>,
    /// When the provider was last asked about it (epoch seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polled_at: Option<i64>,
}

/// A PAN check the provider has not answered, or a DigiLocker session not finished: the jobs ask again.
pub(super) fn waits_for_provider(record: &KycRecord) -> bool {
    record.status != KycStatus::Rejected
        && (record.pan.status == super::StepStatus::Pending || record.aadhaar.status == super::StepStatus::Pending)
}

/// One write of a KYC record with everything that goes with it, in one transaction.
pub struct RecordWrite<'a> {
    pub record: &'a KycRecord,
    /// The record as read (`None`: there was none); the write holds only if it is unchanged.
    pub previous: Option<&'a KycRecord>,
    pub vault: Vec<(String, VaultEntry)>,
    pub drop_vault: Vec<String>,
    pub consents: Vec<ConsentRecord>,
    pub audit: Option<DecisionRecord>,
    /// Fingerprints this account holds claims on that the record no longer backs.
    pub releases: Vec<String>,
    pub open_session: Option<DigilockerSession>,
    pub close_session: Option<String>,
    /// Profile fields changed with the record (a corrected date of birth), on the same condition that the
    /// account is open.
    pub profile_changes: Vec<(&'static str, serde_json::Value)>,
    /// Writes of other owners that commit with the record, or not at all (a correction's answer).
    pub with: Vec<WriteOp>,
}

impl<'a> RecordWrite<'a> {
    pub fn new(record: &'a KycRecord, previous: Option<&'a KycRecord>) -> Self {
        Self {
            record,
            previous,
            vault: Vec::new(),
            drop_vault: Vec::new(),
            consents: Vec::new(),
            audit: None,
            releases: Vec::new(),
            open_session: None,
            close_session: None,
            profile_changes: Vec::new(),
            with: Vec::new(),
        }
    }

    fn became(&self, status: KycStatus) -> bool {
        self.record.status == status && self.previous.is_none_or(|p| p.status != status)
    }

    fn ops(&self) -> StoreResult<Vec<WriteOp>> {
        let record = self.record;
        let user = record.user_id.as_str();
        let mut ops: Vec<WriteOp> = self.releases.iter().map(|f| release_claim(user, f)).collect();
        if self.became(KycStatus::Verified) {
            // Uniqueness is decided here, atomically with the verification.
            let kind = if record.gstin.is_some() { DocumentKind::Gstin } else { DocumentKind::Pan };
            ops.push(claim_put(user, kind, record.claimed_fingerprint())?);
        }
        ops.extend(self.drop_vault.iter().map(|r| vault_delete(r)));
        for (reference, entry) in &self.vault {
            let item = Item::from_record(vault_pk(reference), VAULT_SK, entry, None)?;
            ops.push(WriteOp::Put(Put { table: Table::Vault, item, condition: Condition::NotExists }));
        }
        ops.push(put_record(record, self.previous.map(|p| p.revision))?);
        ops.push(crate::accounts::kyc_status_update_with(user, record.status, &self.profile_changes));
        if self.became(KycStatus::Verified) || self.became(KycStatus::Rejected) {
            ops.extend(outcome_notice(record)?);
        }
        ops.extend(self.index_ops()?);
        for consent in &self.consents {
            let item = Item::from_record(user_pk(user), time_sort_key(CONSENT_PREFIX, consent.at), consent, None)?;
            ops.push(WriteOp::Put(Put { table: Table::Main, item, condition: Condition::NotExists }));
        }
        if let Some(audit) = &self.audit {
            let item = Item::from_record(user_pk(user), time_sort_key(DECISION_PREFIX, audit.at), audit, None)?;
            ops.push(WriteOp::Put(Put { table: Table::Main, item, condition: Condition::NotExists }));
        }
        ops.extend(self.session_ops()?);
        ops.extend(self.with.iter().cloned());
        Ok(ops)
    }

    /// The operators' queue holds in-review records; the retry index records waiting for the provider. The
    /// previous submission's entries go unless the one just put is the same item.
    fn index_ops(&self) -> StoreResult<Vec<WriteOp>> {
        let record = self.record;
        let mut ops = Vec::new();
        for (pk, wanted) in [
            (schema::KYC_QUEUE_PK, record.status == KycStatus::InReview),
            (schema::KYC_RETRY_PK, waits_for_provider(record)),
        ] {
            if wanted {
                ops.push(index_put(pk, record)?);
            }
            if let Some(previous) = self.previous.filter(|p| !(wanted && index_sk(p) == index_sk(record))) {
                ops.push(index_delete(pk, previous));
            }
        }
        Ok(ops)
    }

    fn session_ops(&self) -> StoreResult<Vec<WriteOp>> {
        let mut ops = Vec::new();
        if let Some(session) = &self.open_session {
            let expires_at = (session.started_at + crate::retention::KYC_QUEUE_LIFETIME).timestamp();
            let pk = schema::kyc_digilocker_pk(&session.verification_id);
            let item = Item::from_record(pk, ATTEMPT_SK, session, Some(expires_at))?;
            ops.push(WriteOp::Put(Put { table: Table::Main, item, condition: Condition::NotExists }));
        }
        if let Some(verification_id) = &self.close_session {
            ops.push(WriteOp::Delete(Delete {
                table: Table::Main,
                pk: schema::kyc_digilocker_pk(verification_id),
                sk: ATTEMPT_SK.into(),
                condition: Condition::Always,
            }));
        }
        Ok(ops)
    }
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
    /// The open DigiLocker session with this verification id.
    async fn digilocker_session(&self, verification_id: &str) -> StoreResult<Option<DigilockerSession>>;
    /// Writes a record and everything that goes with it atomically (see [`RecordWrite`]).
    async fn save_kyc(&self, write: &RecordWrite<'_>) -> Result<(), WriteConflict>;
    /// Takes the session's turn to ask the provider: true when nobody asked within `gap` and this caller's
    /// mark went in first.
    async fn take_poll(
        &self,
        session: &DigilockerSession,
        now: DateTime<Utc>,
        gap: chrono::Duration,
    ) -> StoreResult<bool>;
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

    async fn digilocker_session(&self, verification_id: &str) -> StoreResult<Option<DigilockerSession>> {
        let pk = schema::kyc_digilocker_pk(verification_id);
        self.get(Table::Main, &pk, ATTEMPT_SK).await?.map(|i| i.record()).transpose()
    }

    async fn save_kyc(&self, write: &RecordWrite<'_>) -> Result<(), WriteConflict> {
        self.transact(write.ops()?).await.map_err(conflict)
    }

    async fn take_poll(
        &self,
        session: &DigilockerSession,
        now: DateTime<Utc>,
        gap: chrono::Duration,
    ) -> StoreResult<bool> {
        if session.polled_at.is_some_and(|at| now.timestamp() - at < gap.num_seconds()) {
            return Ok(false);
        }
        // The mark read stays the mark: two callers that read the same one cannot both go in.
        let unchanged = match session.polled_at {
            Some(at) => Condition::AttrEquals("polled_at".into(), json!(at)),
            None => Condition::AttrAbsentOrEquals("polled_at".into(), json!(-1)),
        };
        let pk = schema::kyc_digilocker_pk(&session.verification_id);
        let update = Update::new(Table::Main, pk, ATTEMPT_SK).set("polled_at", json!(now.timestamp())).when(unchanged);
        Ok(self.update(update).await.applied()?.is_some())
    }
}

/// Claims the account holds on the numbers of `record` (to release when they stop backing it).
pub(super) async fn held_claims<S: KycStore + ?Sized>(
    store: &S,
    user_id: &str,
    record: &KycRecord,
) -> StoreResult<Vec<String>> {
    let mut held = Vec::new();
    for fingerprint in record.fingerprints() {
        if store.claim_holder(fingerprint).await?.as_deref() == Some(user_id) {
            held.push(fingerprint.to_owned());
        }
    }
    Ok(held)
}

/// Whether another account holds the claim this record would make.
pub(super) async fn claimed_elsewhere<S: KycStore + ?Sized>(store: &S, record: &KycRecord) -> StoreResult<bool> {
    let holder = store.claim_holder(record.claimed_fingerprint()).await?;
    Ok(holder.is_some_and(|holder| holder != record.user_id))
}

/// Singleton index entries (queue, retries), oldest first: the user ids and the entries' sort keys.
pub(super) async fn index_page<S: ItemStore + ?Sized>(
    store: &S,
    pk: &str,
    limit: u32,
    after: Option<String>,
) -> StoreResult<(Vec<(String, Item)>, Option<String>)> {
    let page = store.query(Query::new(Table::Main, pk).limit(limit).after(after)).await?;
    let entries = page
        .items
        .into_iter()
        .map(|item| {
            (item.attrs.get("user_id").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned(), item)
        })
        .collect();
    Ok((entries, page.next))
}

/// Removes an index entry found stale (its record moved on).
pub(super) async fn drop_index_entry<S: ItemStore + ?Sized>(store: &S, entry: &Item) {
    let delete =
        Delete { table: Table::Main, pk: entry.pk.clone(), sk: entry.sk.clone(), condition: Condition::Always };
    if let Err(e) = store.delete(delete).await {
        tracing::warn!(error = %e, "a stale KYC index entry stays until the next pass");
    }
}

/// The retention rule for closed accounts, as the closing transaction's part: the KYC record expires
/// `retention_years` after closure and the claims this account holds are released, so their owner can
/// verify a new account (at most three writes: the closing transaction is at DynamoDB Local's size limit). Returns the ops and the expiry (no ops without KYC data).
/// The vault entries, operator decisions and consent records follow once the closure commits ([`expire_after_closure`]).
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

/// After a closure (idempotent): the vault entries, the operators' decisions and the consent records expire
/// with the KYC record.
pub async fn after_closure(store: &dyn ItemStore, user_id: &str) -> StoreResult<()> {
    match retained_until(store, user_id).await? {
        Some(until) => expire_after_closure(store, user_id, until).await,
        None => Ok(()),
    }
}

/// The deletes that take a record out of the operators' queue, the jobs' retries and its DigiLocker session.
fn unlisting(record: &KycRecord) -> Vec<WriteOp> {
    let mut ops = vec![index_delete(schema::KYC_QUEUE_PK, record), index_delete(schema::KYC_RETRY_PK, record)];
    if let Some(verification_id) = &record.aadhaar.verification_id {
        ops.push(WriteOp::Delete(Delete {
            table: Table::Main,
            pk: schema::kyc_digilocker_pk(verification_id),
            sk: ATTEMPT_SK.into(),
            condition: Condition::Always,
        }));
    }
    ops
}

/// After a closure commits (idempotent): the record leaves the queue and the retries, and the vault
/// entries, operator decisions and consent records expire with it.
pub async fn expire_after_closure<S: ItemStore + ?Sized>(store: &S, user_id: &str, expires_at: i64) -> StoreResult<()> {
    let expire = |table: Table, pk: String, sk: String| {
        Update::new(table, pk, sk).expiry(ExpiryChange::Set(expires_at)).when(Condition::Exists)
    };
    let mut targets = Vec::new();
    if let Some(record) = store.kyc_record(user_id).await? {
        for reference in std::iter::once(&record.pan_ref).chain(record.aadhaar_ref.as_ref()) {
            targets.push(expire(Table::Vault, vault_pk(reference), VAULT_SK.into()));
        }
        // Nothing about a closed account is asked of the provider or of an operator any more (the jobs and
        // the queue skip closed accounts meanwhile).
        store.transact(unlisting(&record)).await?;
    }
    for prefix in [DECISION_PREFIX, CONSENT_PREFIX] {
        for item in crate::store::user_items(store, user_id, prefix).await? {
            targets.push(expire(Table::Main, item.pk, item.sk));
        }
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
