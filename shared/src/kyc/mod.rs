//! KYC: PAN and Aadhaar submission, the encrypted vault, operator decisions, the gate other functions
//! call, and the retention rule applied when an account closes.
//!
//! Items:
//! - main `USER#<id>` / `KYC`: status, masked numbers, vault references, fingerprints, decision.
//! - main `USER#<id>` / `KYCDECISION#<millis>#<rand>`: each operator decision (who, when, why), and each
//!   time an operator revealed a full number (who, when, which, why).
//! - main `KYCQUEUE` / `<submitted millis>#<user id>`: a pending submission waiting for an operator, oldest
//!   first; written with the submission, removed with the decision (an entry whose submission changed
//!   since is skipped, and removed, when the queue is listed).
//! - main `KYCSUBMIT#<id>` / `WINDOW`: submissions left in the account's 30-day window (every submission
//!   counts, refused ones included).
//! - main `KYCDOC#<fingerprint>` / `CLAIM`: "this PAN/Aadhaar backs this account", written when a submission
//!   is *verified* (automatically, or by an operator's approval; a pending submission blocks nobody) with
//!   an "absent or mine" condition in the verifying transaction, so one number can never back two accounts,
//!   even under concurrency.
//! - vault `VAULT#<reference>` / `SECRET`: the full number, envelope-encrypted, bound to owner and kind.
//!
//! The full numbers exist in clear only in memory during a request; logs, errors and every other item
//! carry the masked form or the keyed fingerprint.

pub mod documents;
pub mod vault;

use crate::error::ErrorCode;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::accounts::{AccountStore, KycStatus, time_sort_key, timestamp, user_pk};
use crate::clock::Clock;
use crate::config::{Config, KycMode};
use crate::error::{ApiError, ApiResult};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::secrets::random_suffix;
use crate::store::{
    Condition, Conditional, Delete, ExpiryChange, Item, ItemStore, Put, Query, SortKeyRange, StoreError, StoreResult,
    Table, Update, WriteOp,
};
use documents::{Aadhaar, Pan};
use vault::Sealed;

use crate::store::schema::{self, kyc_claim_pk as claim_pk, kyc_submissions_pk as submissions_pk, vault_pk};

const KYC_SK: &str = schema::sk::KYC;
const PROFILE_SK: &str = schema::sk::PROFILE;
const MAX_NAME_CHARS: usize = 100;
/// Submissions one account may make in any [`SUBMISSION_WINDOW_DAYS`]: enough to fix typos and answer a
/// rejection, too few to test other people's numbers against the uniqueness rule.
pub const MAX_SUBMISSIONS: usize = 5;
pub const SUBMISSION_WINDOW_DAYS: i64 = 30;
const MAX_REASON_CHARS: usize = 500;

/// The keys KYC needs: the envelope-encryption provider for the vault and, where numbers are submitted
/// (the kyc function, the local server), the fingerprint key.
pub struct KycKeys {
    pub data_keys: Arc<dyn vault::DataKeys>,
    pub fingerprinter: Option<vault::Fingerprinter>,
}

impl KycKeys {
    /// Keys that live only as long as the process: for tests.
    pub fn ephemeral() -> Self {
        let mut master = [0u8; 32];
        let mut fingerprint = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut master);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fingerprint);
        Self {
            data_keys: Arc::new(vault::LocalDataKeys::new(master)),
            fingerprinter: Some(vault::Fingerprinter::new(fingerprint.to_vec())),
        }
    }

    /// The fingerprint key, or a 500 where this function was deployed without it.
    pub fn fingerprinter(&self) -> Result<&vault::Fingerprinter, ApiError> {
        self.fingerprinter
            .as_ref()
            .ok_or_else(|| ApiError::Internal("the fingerprint key is not configured for this function".into()))
    }

    /// The embedded default: key files under `dir`, created on first run.
    pub fn from_key_files(dir: &Path) -> Result<Self, vault::VaultError> {
        let master = vault::LocalDataKeys::from_key_file(&dir.join("vault-master.key"))?;
        let fingerprint = vault::load_or_create_key_file(&dir.join("kyc-fingerprint.key"))?;
        Ok(Self { data_keys: Arc::new(master), fingerprinter: Some(vault::Fingerprinter::new(fingerprint.to_vec())) })
    }
}

/// The two documents, as named in fingerprints, vault entries and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Pan,
    Aadhaar,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Pan => "pan",
            DocumentKind::Aadhaar => "aadhaar",
        }
    }
}

/// The stored KYC state of one account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KycRecord {
    pub user_id: String,
    pub status: KycStatus,
    pub name_on_pan: String,
    pub pan_masked: String,
    pub aadhaar_masked: String,
    pub pan_ref: String,
    pub aadhaar_ref: String,
    pub pan_fingerprint: String,
    pub aadhaar_fingerprint: String,
    pub submitted_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// Bumped by every write, for optimistic concurrency.
    pub revision: i64,
}

impl KycRecord {
    fn reference(&self, kind: DocumentKind) -> &str {
        match kind {
            DocumentKind::Pan => &self.pan_ref,
            DocumentKind::Aadhaar => &self.aadhaar_ref,
        }
    }

    fn fingerprint(&self, kind: DocumentKind) -> &str {
        match kind {
            DocumentKind::Pan => &self.pan_fingerprint,
            DocumentKind::Aadhaar => &self.aadhaar_fingerprint,
        }
    }
}

/// What `GET /v1/kyc` and `POST /v1/kyc` show: status and masked numbers only.
#[derive(Debug, Clone, Serialize)]
pub struct KycView {
    pub status: KycStatus,
    pub name_on_pan: Option<String>,
    pub pan_masked: Option<String>,
    pub aadhaar_masked: Option<String>,
    pub submitted_at: Option<String>,
    pub verified_at: Option<String>,
    pub rejection_reason: Option<String>,
}

impl KycView {
    pub fn not_submitted() -> Self {
        Self {
            status: KycStatus::NotSubmitted,
            name_on_pan: None,
            pan_masked: None,
            aadhaar_masked: None,
            submitted_at: None,
            verified_at: None,
            rejection_reason: None,
        }
    }
}

impl From<&KycRecord> for KycView {
    fn from(r: &KycRecord) -> Self {
        Self {
            status: r.status,
            name_on_pan: Some(r.name_on_pan.clone()),
            pan_masked: Some(r.pan_masked.clone()),
            aadhaar_masked: Some(r.aadhaar_masked.clone()),
            submitted_at: Some(timestamp(r.submitted_at)),
            verified_at: r.verified_at.map(timestamp),
            rejection_reason: r.rejection_reason.clone(),
        }
    }
}

/// A vault entry: one sealed number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaultEntry {
    pub user_id: String,
    pub kind: DocumentKind,
    #[serde(flatten)]
    pub sealed: Sealed,
    pub created_at: DateTime<Utc>,
}

/// An operator's decision, kept as an audit record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub user_id: String,
    pub decision: Decision,
    /// For a reveal: the number shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub decided_by: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
    /// Not a decision: an operator was shown a full number (audited like one, kept as long).
    Reveal,
}

const CLAIM_SK: &str = schema::sk::CLAIM;
const DECISION_PREFIX: &str = schema::prefix::KYC_DECISION;
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
fn set_account_status(user_id: &str, status: KycStatus) -> WriteOp {
    WriteOp::Update(
        Update::new(Table::Main, user_pk(user_id), PROFILE_SK)
            .set("kyc_status", json!(status))
            .when(Condition::AttrEquals("status".into(), json!(crate::accounts::AccountStatus::Active))),
    )
}

fn queue_sk(record: &KycRecord) -> String {
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
        ops.push(set_account_status(user, record.status));
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
            set_account_status(user, record.status),
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

/// The body of `POST /v1/kyc`.
#[derive(Debug, Deserialize)]
pub struct SubmitRequest {
    pub pan: String,
    pub aadhaar: String,
    pub name_on_pan: String,
}

fn check_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidNameOnPan,
            "name_on_pan",
            format!("name_on_pan must be the name printed on the PAN card (1 to {MAX_NAME_CHARS} characters)"),
        ));
    }
    Ok(name.to_owned())
}

fn already_verified() -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::KycAlreadyVerified,
        message: "KYC is already verified and cannot be changed".into(),
        param: None,
    }
}

/// The answer when a number already backs another account. It names neither the document nor whether it
/// is registered: the same words whatever the reason verification failed.
fn not_verifiable() -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::KycNotVerifiable,
        message: "these KYC details cannot be verified for this account; check them, or write to the grievance officer (GET /v1/privacy)".into(),
        param: None,
    }
}

/// Claims the account holds on the numbers of `record` (to release when they stop backing it).
async fn held_claims<S: KycStore + ?Sized>(store: &S, user_id: &str, record: &KycRecord) -> StoreResult<Vec<String>> {
    let mut held = Vec::new();
    for kind in [DocumentKind::Pan, DocumentKind::Aadhaar] {
        let fingerprint = record.fingerprint(kind);
        if store.claim_holder(fingerprint).await?.as_deref() == Some(user_id) {
            held.push(fingerprint.to_owned());
        }
    }
    Ok(held)
}

/// Whether another account holds a claim on any of these fingerprints.
async fn claimed_elsewhere<S: KycStore + ?Sized>(store: &S, user_id: &str, fingerprints: &[&str]) -> StoreResult<bool> {
    for fingerprint in fingerprints {
        if store.claim_holder(fingerprint).await?.is_some_and(|holder| holder != user_id) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Validates and stores a KYC submission. In `auto` mode a valid submission whose numbers back no other
/// account is verified at once (its claims written in the same transaction); in `manual` mode it waits
/// (`pending`, blocking nobody) for an operator, whose approval decides uniqueness. At most
/// [`MAX_SUBMISSIONS`] per account in [`SUBMISSION_WINDOW_DAYS`]. Only with a verified e-mail address.
pub async fn submit<S: ItemStore + ?Sized>(
    store: &S,
    keys: &KycKeys,
    clock: &dyn Clock,
    config: &Config,
    user_id: &str,
    request: SubmitRequest,
) -> ApiResult<KycRecord> {
    let pan = Pan::parse(&request.pan)?;
    let aadhaar = Aadhaar::parse(&request.aadhaar)?;
    let name_on_pan = check_name(&request.name_on_pan)?;

    // Identity goes only on a proven address: an unverified account (maybe someone else's address,
    // squatted) cannot attach its KYC to it for the address's owner to inherit.
    let account = store.account(user_id).await?.filter(|a| a.status == crate::accounts::AccountStatus::Active);
    let account =
        account.ok_or_else(|| ApiError::unauthenticated(ErrorCode::InvalidSession, "the account is closed"))?;
    crate::verification::require_verified_email(&account)?;
    let now = clock.now();
    let previous = store.kyc_record(user_id).await?;
    if previous.as_ref().is_some_and(|p| p.status == KycStatus::Verified) {
        return Err(already_verified());
    }
    // Counted before anything is checked against other accounts, refusals included: the uniqueness rule
    // is not an oracle one can ask more than the limit (and each question costs two KMS calls).
    let window_end = (now + chrono::Duration::days(SUBMISSION_WINDOW_DAYS)).timestamp();
    let limit = MAX_SUBMISSIONS as u32;
    let window = submissions_pk(user_id);
    let counted = crate::auth::reserve_in_window(store, &window, limit, window_end, now.timestamp()).await?;
    let crate::auth::Reservation::Reserved { window: slot } = counted else {
        return Err(ApiError::Conflict {
            code: ErrorCode::KycSubmissionLimit,
            message: format!(
                "at most {MAX_SUBMISSIONS} KYC submissions are accepted per account in {SUBMISSION_WINDOW_DAYS} days; write to the grievance officer (GET /v1/privacy)"
            ),
            param: None,
        });
    };
    let validated = Validated { pan, aadhaar, name_on_pan, previous, now };
    let result = store_submission(store, keys, config, user_id, validated).await;
    // Only answers about the numbers count; an outage, or the conflict of a double click, gives it back.
    let counts = match &result {
        Ok(_) => true,
        Err(e) => e.error_code() == ErrorCode::KycNotVerifiable,
    };
    if !counts && let Err(e) = crate::auth::release_in_window(store, &window, &slot).await {
        tracing::warn!(%user_id, error = %e, "a KYC submission slot was not given back");
    }
    result
}

/// A submission that passed validation and was counted.
struct Validated {
    pan: Pan,
    aadhaar: Aadhaar,
    name_on_pan: String,
    previous: Option<KycRecord>,
    now: DateTime<Utc>,
}

async fn store_submission<S: ItemStore + ?Sized>(
    store: &S,
    keys: &KycKeys,
    config: &Config,
    user_id: &str,
    validated: Validated,
) -> ApiResult<KycRecord> {
    let Validated { pan, aadhaar, name_on_pan, previous, now } = validated;
    let fingerprinter = keys.fingerprinter()?;
    let fingerprints = [
        fingerprinter.fingerprint("pan", pan.as_str()).await?,
        fingerprinter.fingerprint("aadhaar", aadhaar.as_str()).await?,
    ];
    let auto = config.kyc_mode == KycMode::Auto;
    // Answer before spending a data key; the transaction below enforces it race-free anyway.
    if auto && claimed_elsewhere(store, user_id, &[&fingerprints[0], &fingerprints[1]]).await? {
        return Err(not_verifiable());
    }

    let vault_entries = seal_numbers(keys, user_id, (&pan, &aadhaar), now).await?;
    let (status, verified_at) = if auto { (KycStatus::Verified, Some(now)) } else { (KycStatus::Pending, None) };
    let [pan_fingerprint, aadhaar_fingerprint] = fingerprints;
    let record = KycRecord {
        user_id: user_id.to_owned(),
        status,
        name_on_pan,
        pan_masked: pan.masked(),
        aadhaar_masked: aadhaar.masked(),
        pan_ref: vault_entries[0].0.clone(),
        aadhaar_ref: vault_entries[1].0.clone(),
        pan_fingerprint,
        aadhaar_fingerprint,
        submitted_at: now,
        verified_at,
        rejection_reason: None,
        decided_by: None,
        decided_at: None,
        revision: previous.as_ref().map_or(1, |p| p.revision + 1),
    };
    // Claims an earlier submission left (older data) go unless this one, verified, claims them again.
    let mut releases = match &previous {
        Some(previous) => held_claims(store, user_id, previous).await?,
        None => Vec::new(),
    };
    if status == KycStatus::Verified {
        releases.retain(|f| *f != record.pan_fingerprint && *f != record.aadhaar_fingerprint);
    }
    let submission = Submission { record, vault: vault_entries, releases };
    match store.save_submission(&submission, previous.as_ref()).await {
        Ok(()) => Ok(submission.record),
        Err(WriteConflict::Store(e)) => Err(e.into()),
        Err(WriteConflict::Conflict) => Err(submission_conflict(store, &submission.record, auto).await?),
    }
}

/// Seals both numbers under one fresh data key: the PAN's vault entry first, then the Aadhaar's.
async fn seal_numbers(
    keys: &KycKeys,
    user_id: &str,
    (pan, aadhaar): (&Pan, &Aadhaar),
    now: DateTime<Utc>,
) -> ApiResult<Vec<(String, VaultEntry)>> {
    let data_key = keys.data_keys.generate().await?;
    let mut entries = Vec::new();
    for (kind, number) in [(DocumentKind::Pan, pan.as_str()), (DocumentKind::Aadhaar, aadhaar.as_str())] {
        let aad = format!("{user_id}:{}", kind.as_str());
        let sealed = vault::seal(&data_key, keys.data_keys.provider(), number.as_bytes(), aad.as_bytes())?;
        let entry = VaultEntry { user_id: user_id.to_owned(), kind, sealed, created_at: now };
        entries.push((format!("vref_{}", random_suffix()), entry));
    }
    Ok(entries)
}

/// Why a submission's transaction lost: a number another account verified meanwhile, a verification of
/// this account, or any other concurrent change.
async fn submission_conflict<S: ItemStore + ?Sized>(store: &S, record: &KycRecord, auto: bool) -> ApiResult<ApiError> {
    let user_id = record.user_id.as_str();
    if auto && claimed_elsewhere(store, user_id, &[&record.pan_fingerprint, &record.aadhaar_fingerprint]).await? {
        return Ok(not_verifiable());
    }
    if store.kyc_record(user_id).await?.is_some_and(|r| r.status == KycStatus::Verified) {
        return Ok(already_verified());
    }
    Ok(ApiError::Conflict {
        code: ErrorCode::KycSubmissionConflict,
        message: "another KYC change for this account happened at the same time; retry".into(),
        param: None,
    })
}

/// Records an operator's decision on a pending submission.
pub async fn decide<S: KycStore + AccountStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    user_id: &str,
    decision: Decision,
    reason: Option<String>,
    operator: &str,
) -> ApiResult<KycRecord> {
    if decision == Decision::Reveal {
        return Err(ApiError::invalid(
            ErrorCode::InvalidDecision,
            "decision",
            "decision must be approve or reject (numbers are revealed with POST /v1/admin/kyc/{user_id}/reveal)",
        ));
    }
    let reason = check_reason(decision, reason)?;
    let Some(mut record) = store.kyc_record(user_id).await? else {
        return Err(ApiError::NotFound {
            code: ErrorCode::KycNotFound,
            message: "no KYC submission for this user".into(),
        });
    };
    if store.account(user_id).await?.is_none_or(|a| a.status != crate::accounts::AccountStatus::Active) {
        return Err(account_closed());
    }
    match record.status {
        KycStatus::Pending => {}
        KycStatus::Verified => return Err(already_verified()),
        other => {
            return Err(ApiError::Conflict {
                code: ErrorCode::KycNotPending,
                message: format!("only pending submissions can be decided (this one is {})", status_name(other)),
                param: None,
            });
        }
    }
    let now = clock.now();
    let previous_revision = record.revision;
    record.revision += 1;
    record.decided_at = Some(now);
    record.decided_by = Some(operator.to_owned());
    match decision {
        Decision::Approve => {
            record.status = KycStatus::Verified;
            record.verified_at = Some(now);
            record.rejection_reason = None;
        }
        Decision::Reject | Decision::Reveal => {
            record.status = KycStatus::Rejected;
            record.rejection_reason = reason.clone();
        }
    }
    let audit = DecisionRecord {
        user_id: user_id.to_owned(),
        decision,
        document: None,
        reason,
        decided_by: operator.to_owned(),
        at: now,
    };
    // A rejected submission must not keep numbers from their rightful owner (older data may hold claims).
    let releases = match decision {
        Decision::Reject | Decision::Reveal => held_claims(store, user_id, &record).await?,
        Decision::Approve => Vec::new(),
    };
    match store.save_decision(&record, previous_revision, &audit, &releases).await {
        Ok(()) => Ok(record),
        Err(WriteConflict::Store(e)) => Err(e.into()),
        Err(WriteConflict::Conflict) => Err(decision_conflict(store, &record, decision).await?),
    }
}

/// The operator's reason: trimmed, at most [`MAX_REASON_CHARS`], and required to reject.
fn check_reason(decision: Decision, reason: Option<String>) -> ApiResult<Option<String>> {
    let reason = reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
        let message = format!("reason must be at most {MAX_REASON_CHARS} characters");
        return Err(ApiError::invalid(ErrorCode::InvalidReason, "reason", message));
    }
    if decision == Decision::Reject && reason.is_none() {
        return Err(ApiError::invalid(
            ErrorCode::InvalidReason,
            "reason",
            "a rejection needs a reason the user will see",
        ));
    }
    Ok(reason)
}

/// Why a decision's transaction lost: a number another account verified meanwhile (said to the operator
/// only, and without the number), the account's closure, or another change of the submission.
async fn decision_conflict<S: KycStore + AccountStore + ?Sized>(
    store: &S,
    record: &KycRecord,
    decision: Decision,
) -> ApiResult<ApiError> {
    let user_id = record.user_id.as_str();
    let fingerprints = [record.pan_fingerprint.as_str(), record.aadhaar_fingerprint.as_str()];
    if decision == Decision::Approve && claimed_elsewhere(store, user_id, &fingerprints).await? {
        return Ok(ApiError::Conflict {
            code: ErrorCode::KycDocumentInUse,
            message: "a number of this submission already backs another verified account; reject it with a reason"
                .into(),
            param: None,
        });
    }
    if store.account(user_id).await?.is_none_or(|a| a.status != crate::accounts::AccountStatus::Active) {
        return Ok(account_closed());
    }
    Ok(ApiError::Conflict {
        code: ErrorCode::KycSubmissionConflict,
        message: "the submission changed while it was being decided; reload it".into(),
        param: None,
    })
}

fn account_closed() -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::AccountClosed,
        message: "the account is closed; its KYC submission can no longer be decided".into(),
        param: None,
    }
}

pub fn status_name(status: KycStatus) -> &'static str {
    match status {
        KycStatus::NotSubmitted => "not_submitted",
        KycStatus::Pending => "pending",
        KycStatus::Verified => "verified",
        KycStatus::Rejected => "rejected",
    }
}

/// The gate of top-ups and API keys: passes only for accounts whose e-mail address is verified (else 403
/// `email_not_verified`, the first step) and whose KYC is verified (else 403 `kyc_required` naming the status).
pub async fn require_verified<S: AccountStore + ?Sized>(store: &S, user_id: &str) -> ApiResult<()> {
    let account = store.account(user_id).await?.filter(|a| a.status == crate::accounts::AccountStatus::Active);
    let Some(account) = account else {
        return Err(ApiError::unauthenticated(ErrorCode::InvalidSession, "the account is closed"));
    };
    crate::verification::require_verified_email(&account)?;
    let status = account.kyc_status;
    if status == KycStatus::Verified {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        code: ErrorCode::KycRequired,
        message: format!("complete KYC verification first (current KYC status: {})", status_name(status)),
    })
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

/// Decrypts one of the user's numbers from the vault (for the owner's data export).
pub async fn reveal<S: KycStore + ?Sized>(
    store: &S,
    keys: &KycKeys,
    record: &KycRecord,
    kind: DocumentKind,
) -> ApiResult<Option<String>> {
    let Some(entry) = store.vault_entry(record.reference(kind)).await? else { return Ok(None) };
    let aad = format!("{}:{}", record.user_id, kind.as_str());
    let plaintext = vault::open(keys.data_keys.as_ref(), &entry.sealed, aad.as_bytes()).await?;
    String::from_utf8(plaintext).map(Some).map_err(|_| ApiError::Internal("vault entry is not text".into()))
}

/// A pending submission as the operators' queue shows it: masked numbers and the account's details.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedSubmission {
    pub user_id: String,
    pub email: String,
    pub full_name: String,
    pub date_of_birth: chrono::NaiveDate,
    pub account_created_at: String,
    pub name_on_pan: String,
    pub pan_masked: String,
    pub aadhaar_masked: String,
    pub submitted_at: String,
}

/// `GET /v1/admin/kyc/queue`: pending submissions, oldest first, a page at a time (`after` is the previous
/// page's cursor). Entries whose submission was decided or replaced meanwhile are skipped and removed.
pub async fn queue<S: ItemStore + ?Sized>(
    store: &S,
    limit: u32,
    after: Option<String>,
) -> ApiResult<(Vec<QueuedSubmission>, Option<String>)> {
    let page = store.query(Query::new(Table::Main, schema::KYC_QUEUE_PK).limit(limit).after(after)).await?;
    let mut listed = Vec::new();
    for entry in &page.items {
        let user_id = entry.attrs.get("user_id").and_then(serde_json::Value::as_str).unwrap_or_default();
        let record = store.kyc_record(user_id).await?.filter(|r| r.status == KycStatus::Pending);
        let account = store.account(user_id).await?.filter(|a| a.status == crate::accounts::AccountStatus::Active);
        let (Some(record), Some(account)) = (record, account) else {
            stale_entry(store, entry).await;
            continue;
        };
        if queue_sk(&record) != entry.sk {
            stale_entry(store, entry).await;
            continue;
        }
        listed.push(QueuedSubmission {
            user_id: record.user_id.clone(),
            email: account.email,
            full_name: account.full_name,
            date_of_birth: account.date_of_birth,
            account_created_at: crate::accounts::timestamp(account.created_at),
            name_on_pan: record.name_on_pan,
            pan_masked: record.pan_masked,
            aadhaar_masked: record.aadhaar_masked,
            submitted_at: crate::accounts::timestamp(record.submitted_at),
        });
    }
    Ok((listed, page.next))
}

async fn stale_entry<S: ItemStore + ?Sized>(store: &S, entry: &Item) {
    let delete =
        Delete { table: Table::Main, pk: entry.pk.clone(), sk: entry.sk.clone(), condition: Condition::Always };
    if let Err(e) = store.delete(delete).await {
        tracing::warn!(error = %e, "a stale KYC queue entry stays until the next listing");
    }
}

/// `POST /v1/admin/kyc/{user_id}/reveal`: shows an operator one full number of a submission, after
/// recording who asked, when, for which number and why (the record is kept like a decision). Nothing is
/// shown if the record cannot be written.
pub async fn reveal_for_operator<S: ItemStore + ?Sized>(
    store: &S,
    keys: &KycKeys,
    clock: &dyn Clock,
    (user_id, document): (&str, DocumentKind),
    reason: Option<String>,
    operator: &str,
) -> ApiResult<String> {
    let reason = reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    let Some(reason) = reason.filter(|r| r.chars().count() <= MAX_REASON_CHARS) else {
        let message = format!("a reveal needs a reason of at most {MAX_REASON_CHARS} characters, kept in the audit");
        return Err(ApiError::invalid(ErrorCode::InvalidReason, "reason", message));
    };
    let not_found =
        || ApiError::NotFound { code: ErrorCode::KycNotFound, message: "no KYC submission for this user".into() };
    let record = store.kyc_record(user_id).await?.ok_or_else(not_found)?;
    let now = clock.now();
    let audit = DecisionRecord {
        user_id: user_id.to_owned(),
        decision: Decision::Reveal,
        document: Some(document),
        reason: Some(reason),
        decided_by: operator.to_owned(),
        at: now,
    };
    let put = Put {
        table: Table::Main,
        item: Item::from_record(user_pk(user_id), time_sort_key(DECISION_PREFIX, now), &audit, None)?,
        condition: Condition::NotExists,
    };
    store.put(put).await?;
    reveal(store, keys, &record, document).await?.ok_or_else(not_found)
}
