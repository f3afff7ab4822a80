//! Data rights (DPDP Act): correction, acceptance of a new policy, data export, account closure, and a
//! record of every access, correction and erasure request with its due date (30 days).
//!
//! Items (main table):
//! - `USER#<id>` / `PRIVACYREQ#<millis>#<rand>`: one request: kind, received, due, status and outcome.
//! - `USER#<id>` / `EXPORT#<id>`: one data export and the blob holding it; both go after the export window.
//! - `CLOSURES#PENDING` / `<user id>`: a closure whose follow-up (keys, exports, remaining sessions,
//!   consents, KYC decisions) has not finished; written in the closing transaction, deleted when the
//!   follow-up is done, and finished by the scheduled jobs if the request that closed the account could not.

use crate::error::ErrorCode;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::accounts::{
    self, Account, AccountStatus, AccountStore, AccountView, ClientInfo, PROFILE_SK, check_full_name, normalize_email,
    time_sort_key, timestamp, user_pk,
};
use crate::auth::{LoginAttemptView, LoginStore};
use crate::blobs::BlobStore;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::keys::{ApiKeyView, KeyStore};
use crate::kyc::{self, DocumentKind, KycKeys, KycStore};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::retention::{ItemClass, Span};
use crate::secrets::random_suffix;
use crate::store::{
    Condition, Conditional, Delete, Item, ItemStore, Put, Query, SortKeyRange, StoreError, StoreResult, Table, WriteOp,
    schema,
};
use crate::usage::UsageRecord;
use crate::usage::UsageView;
use crate::wallet::{self, LedgerEntry, LedgerEntryView, Topup, TopupStore, WALLET_SK, WalletStore, WalletView};

/// The DPDP Act's outer limit for answering a data principal's request.
pub const RESPONSE_DAYS: i64 = 30;
/// How long a download link of an export works.
pub const EXPORT_LINK_VALIDITY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// What data-rights calls use (the HTTP layer builds it from its `AppState`): the store, the clock and the
/// configuration, and where the function has them, the KYC keys (an export shows its owner the PAN) and the
/// blob store (export files).
#[derive(Clone)]
pub struct PrivacyContext {
    pub(crate) export_builds: ExportBuilds,
    pub(crate) store: Arc<dyn ItemStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: Arc<Config>,
    pub(crate) kyc_keys: Option<Arc<KycKeys>>,
    pub(crate) blobs: Option<Arc<dyn BlobStore>>,
}

/// Where a requested data export is built: never inside the request that asks for it (a heavy account's
/// export outlasts any request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportBuilds {
    /// By a task of this process, started by the request (the local server, tests).
    #[default]
    InProcess,
    /// By the exports function: the export's insertion reaches it through the main table's stream (AWS).
    Queued,
}

impl PrivacyContext {
    fn kyc_keys(&self) -> ApiResult<&KycKeys> {
        self.kyc_keys
            .as_deref()
            .ok_or_else(|| ApiError::Internal("KYC keys are not configured for this function".into()))
    }

    fn blobs(&self) -> ApiResult<&dyn BlobStore> {
        self.blobs
            .as_deref()
            .ok_or_else(|| ApiError::Internal("blob storage is not configured for this function".into()))
    }
}

const REQUEST_PREFIX: &str = schema::prefix::PRIVACY_REQUEST;
const EXPORT_PREFIX: &str = schema::prefix::EXPORT;
const PENDING_CLOSURES_PK: &str = schema::PENDING_CLOSURES_PK;
/// Closing transactions retried when the wallet moved (a call settling) between the read and the write.
const CLOSE_ATTEMPTS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Access,
    Correction,
    Erasure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Received,
    Completed,
    Failed,
}

/// One data-rights request as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrivacyRequest {
    pub id: String,
    pub kind: RequestKind,
    pub status: RequestStatus,
    pub received_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    pub outcome: String,
}

/// How `GET /v1/privacy/requests` shows a request.
#[derive(Debug, Clone, Serialize)]
pub struct PrivacyRequestView {
    pub id: String,
    pub kind: RequestKind,
    pub status: RequestStatus,
    pub received_at: String,
    pub due_at: String,
    pub completed_at: Option<String>,
    pub outcome: String,
}

impl From<&PrivacyRequest> for PrivacyRequestView {
    fn from(r: &PrivacyRequest) -> Self {
        Self {
            id: r.id.clone(),
            kind: r.kind,
            status: r.status,
            received_at: timestamp(r.received_at),
            due_at: timestamp(r.due_at),
            completed_at: r.completed_at.map(timestamp),
            outcome: r.outcome.clone(),
        }
    }
}

/// A request being handled: the record and where it is stored.
struct Recorded {
    user_id: String,
    sk: String,
    request: PrivacyRequest,
    expires_at: i64,
}

impl Recorded {
    fn new(ctx: &PrivacyContext, user_id: &str, kind: RequestKind) -> Self {
        let now = ctx.clock.now();
        Self {
            user_id: user_id.to_owned(),
            sk: time_sort_key(REQUEST_PREFIX, now),
            request: PrivacyRequest {
                id: format!("prq_{}", random_suffix()),
                kind,
                status: RequestStatus::Received,
                received_at: now,
                due_at: now + Duration::days(RESPONSE_DAYS),
                completed_at: None,
                outcome: "received".into(),
            },
            expires_at: ctx.config.retention.until(Span::PrivacyRequests, now),
        }
    }

    fn finish(&mut self, status: RequestStatus, outcome: impl Into<String>, at: DateTime<Utc>) {
        self.request.status = status;
        self.request.outcome = outcome.into();
        self.request.completed_at = Some(at);
    }

    fn put(&self) -> StoreResult<WriteOp> {
        Ok(WriteOp::Put(Put {
            table: Table::Main,
            item: Item::from_record(user_pk(&self.user_id), &self.sk, &self.request, Some(self.expires_at))?,
            condition: Condition::Always,
        }))
    }
}

/// Every item of a user's partition under `prefix`, oldest first.
async fn all_with_prefix<S: ItemStore + ?Sized>(store: &S, user_id: &str, prefix: &str) -> StoreResult<Vec<Item>> {
    let query = Query::new(Table::Main, user_pk(user_id)).range(SortKeyRange::Prefix(prefix.into())).limit(500);
    crate::store::all_pages(store, query).await
}

/// The user's own requests, newest first.
pub async fn requests<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    limit: u32,
) -> ApiResult<Vec<PrivacyRequestView>> {
    let query = Query::new(Table::Main, user_pk(user_id))
        .range(SortKeyRange::Prefix(REQUEST_PREFIX.into()))
        .newest_first()
        .limit(limit);
    let page = store.query(query).await?;
    page.items.iter().map(|i| Ok(PrivacyRequestView::from(&i.record::<PrivacyRequest>()?))).collect()
}

/// What `GET /v1/privacy` publishes.
pub fn notice(ctx: &PrivacyContext) -> Value {
    let config = &ctx.config;
    json!({
        "policy_version": config.policy_version,
        "retention": config.retention.published(config.session_ttl, config.login_window),
        "grievance_officer": { "name": config.grievance_name, "email": config.grievance_email },
        "contacts": { "privacy": config.privacy_email, "security": config.security_email },
        "response_days": RESPONSE_DAYS,
        "rights": {
            "access": "POST /v1/privacy/exports, then GET /v1/privacy/exports/{id} for a download link",
            "correction": "PATCH /v1/account (KYC details: resubmit POST /v1/kyc)",
            "erasure": "DELETE /v1/account",
            "requests": "GET /v1/privacy/requests",
        },
    })
}

fn active_account(account: Option<Account>) -> ApiResult<Account> {
    account
        .filter(|a| a.status == AccountStatus::Active)
        .ok_or_else(|| ApiError::unauthenticated(ErrorCode::InvalidSession, "the session's account is closed"))
}

/// The password re-check of account changes and closure, under the same throttle as logins (a stolen
/// session cannot be used to guess the password faster than the login form allows).
async fn confirm_password(
    ctx: &PrivacyContext,
    account: &Account,
    password: Option<String>,
    field: &str,
) -> ApiResult<()> {
    let Some(password) = password.filter(|p| !p.is_empty()) else {
        return Err(ApiError::invalid(
            ErrorCode::MissingField,
            field,
            format!("{field} is required to confirm this change"),
        ));
    };
    let hash = Some(account.password_hash.clone());
    let (store, clock) = (ctx.store.as_ref(), ctx.clock.as_ref());
    if !crate::auth::check_password(store, clock, &ctx.config, &account.email, hash, password).await? {
        return Err(ApiError::Forbidden {
            code: ErrorCode::IncorrectPassword,
            message: format!("{field} is incorrect"),
        });
    }
    Ok(())
}

/// `PATCH /v1/account`: corrects `full_name`, `marketing_consent` and (with `current_password`) `email`.
pub async fn correct(
    ctx: &PrivacyContext,
    user_id: &str,
    body: Map<String, Value>,
    client: &ClientInfo,
) -> ApiResult<Account> {
    let Correction { full_name, marketing, email, password } = Correction::parse(&body)?;
    let store = ctx.store.as_ref();
    let account = active_account(store.account(user_id).await?)?;
    let now = ctx.clock.now();
    let mut update = accounts::profile_update(&account);
    let mut ops = Vec::new();
    let mut changed = Vec::new();
    if let Some(name) = full_name.filter(|n| *n != account.full_name) {
        update = update.set("full_name", json!(name));
        changed.push("full_name");
    }
    if let Some(marketing) = marketing.filter(|m| *m != account.marketing_consent) {
        update = update.set("marketing_consent", json!(marketing));
        ops.push(accounts::consent_put(
            &account,
            &account.accepted_policy_version,
            marketing,
            "marketing_update",
            client,
            now,
        )?);
        changed.push("marketing_consent");
    }
    let new_email = email.filter(|e| *e != account.email);
    if let Some(new_email) = &new_email {
        confirm_password(ctx, &account, password, "current_password").await?;
        if store.email_claimed(new_email).await? {
            return Err(accounts::email_taken());
        }
        // The change takes effect when the link sent to the new address is used
        // (`crate::verification::verify_email`), which moves the claim and tells both addresses.
        update = update.set("pending_email", json!(new_email));
        ops.extend(crate::verification::change_request_ops(store, &account, new_email, now).await?);
        changed.push("email (pending confirmation of the new address)");
    }
    if changed.is_empty() {
        return Ok(account);
    }
    let mut request = Recorded::new(ctx, user_id, RequestKind::Correction);
    request.finish(RequestStatus::Completed, format!("corrected: {}", changed.join(", ")), now);
    // Received and completed at once: one message says both.
    let completed = OutboxMail::new(MailKind::PrivacyRequestCompleted, user_id, now)
        .param("request_kind", "correction")
        .param("request_id", request.request.id.clone())
        .param("outcome", request.request.outcome.clone());
    ops.push(WriteOp::Update(update));
    ops.push(request.put()?);
    ops.push(enqueue(&completed)?);
    if store.transact(ops).await.applied()?.is_none() {
        return Err(correction_conflict(store, new_email.as_deref()).await?);
    }
    active_account(store.account(user_id).await?)
}

/// `POST /v1/unsubscribe?token=…`: a marketing message's one-click unsubscribe (RFC 8058). Withdraws the
/// account's marketing consent and records the withdrawal as a consent record; a second use, or a closed
/// account, changes nothing and answers the same.
pub async fn unsubscribe(ctx: &PrivacyContext, token: &str, client: &ClientInfo) -> ApiResult<()> {
    let invalid = || {
        ApiError::invalid(
            ErrorCode::InvalidToken,
            "token",
            "this unsubscribe link is invalid or has expired; marketing e-mails can be turned off in the dashboard",
        )
    };
    if token.is_empty() {
        return Err(invalid());
    }
    let store = ctx.store.as_ref();
    let user_id = crate::notifications::delivery::unsubscribe_account(store, token).await?.ok_or_else(invalid)?;
    for _ in 0..CLOSE_ATTEMPTS {
        let Some(account) = store.account(&user_id).await?.filter(|a| a.status == AccountStatus::Active) else {
            return Ok(());
        };
        if !account.marketing_consent {
            return Ok(());
        }
        let now = ctx.clock.now();
        let version = account.accepted_policy_version.clone();
        let ops = vec![
            WriteOp::Update(accounts::profile_update(&account).set("marketing_consent", json!(false))),
            accounts::consent_put(&account, &version, false, "unsubscribe_link", client, now)?,
        ];
        if store.transact(ops).await.applied()?.is_some() {
            tracing::info!(%user_id, "marketing consent withdrawn through an unsubscribe link");
            return Ok(());
        }
    }
    Err(ApiError::Conflict {
        code: ErrorCode::AccountChanged,
        message: "the account changed meanwhile; use the link again".into(),
        param: None,
    })
}

/// Why a correction's transaction did not apply: the new email is taken, or the account changed meanwhile.
async fn correction_conflict(store: &dyn ItemStore, new_email: Option<&str>) -> ApiResult<ApiError> {
    let taken = match new_email {
        Some(email) => store.email_claimed(email).await?,
        None => false,
    };
    Ok(if taken {
        accounts::email_taken()
    } else {
        ApiError::Conflict {
            code: ErrorCode::AccountChanged,
            message: "the account changed while this correction was applied; read it again and retry".into(),
            param: None,
        }
    })
}

/// The fields of `PATCH /v1/account`, checked: anything else is named in a 400 that says where it is
/// corrected instead (KYC details, the date of birth) or that it is not a field of the account.
struct Correction {
    full_name: Option<String>,
    marketing: Option<bool>,
    email: Option<String>,
    password: Option<String>,
}

impl Correction {
    fn parse(body: &Map<String, Value>) -> ApiResult<Self> {
        let mut correction = Self { full_name: None, marketing: None, email: None, password: None };
        for (field, value) in body {
            let text = || {
                value.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::invalid(ErrorCode::InvalidType, field, format!("{field} must be a string"))
                })
            };
            match field.as_str() {
                "full_name" => correction.full_name = Some(check_full_name(&text()?)?),
                "marketing_consent" => {
                    let flag = value.as_bool().ok_or_else(|| {
                        ApiError::invalid(ErrorCode::InvalidType, field, "marketing_consent must be true or false")
                    })?;
                    correction.marketing = Some(flag);
                }
                "email" => correction.email = Some(normalize_email(&text()?)?),
                "current_password" => correction.password = Some(text()?),
                other => return Err(not_correctable(other)),
            }
        }
        if correction.full_name.is_none() && correction.marketing.is_none() && correction.email.is_none() {
            return Err(ApiError::invalid(
                ErrorCode::NothingToChange,
                "full_name",
                "send at least one of full_name, marketing_consent, email",
            ));
        }
        Ok(correction)
    }
}

fn not_correctable(field: &str) -> ApiError {
    match field {
        "pan" | "aadhaar" | "name_on_pan" => ApiError::invalid(
            ErrorCode::KycField,
            field,
            format!("{field} is corrected by resubmitting KYC (POST /v1/kyc), not here"),
        ),
        "date_of_birth" => ApiError::invalid(
            ErrorCode::NotEditable,
            field,
            "date_of_birth cannot be changed here: write to the grievance officer (GET /v1/privacy) with proof",
        ),
        other => ApiError::invalid(
            ErrorCode::UnknownField,
            other,
            format!(
                "{other} is not a field of the account; editable: full_name, marketing_consent, email (with current_password)"
            ),
        ),
    }
}

/// `POST /v1/account/accept-policy {version}`: records the acceptance of the policy in force.
pub async fn accept_policy(
    ctx: &PrivacyContext,
    user_id: &str,
    version: &str,
    client: &ClientInfo,
) -> ApiResult<Account> {
    let current = &ctx.config.policy_version;
    if version.trim() != current {
        return Err(ApiError::invalid(
            ErrorCode::TermsNotAccepted,
            "version",
            format!("the policy in force is version {current}; accept exactly that version"),
        ));
    }
    let store = ctx.store.as_ref();
    let account = active_account(store.account(user_id).await?)?;
    if account.accepted_policy_version == *current {
        return Ok(account);
    }
    let now = ctx.clock.now();
    let ops = vec![
        WriteOp::Update(accounts::profile_update(&account).set("accepted_policy_version", json!(current))),
        accounts::consent_put(&account, current, account.marketing_consent, "policy_update", client, now)?,
    ];
    match store.transact(ops).await {
        Ok(()) => active_account(store.account(user_id).await?),
        Err(StoreError::ConditionFailed) => Err(ApiError::Conflict {
            code: ErrorCode::AccountChanged,
            message: "the account changed meanwhile; retry".into(),
            param: None,
        }),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportStatus {
    Pending,
    Ready,
    Failed,
}

/// One data export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataExport {
    pub id: String,
    pub status: ExportStatus,
    pub created_at: DateTime<Utc>,
    pub request_id: String,
    /// The access request's sort key, which the build completes.
    #[serde(default)]
    pub request_sk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

/// How `GET /v1/privacy/exports/{id}` shows an export: a fresh 15-minute link each time it is asked.
#[derive(Debug, Clone, Serialize)]
pub struct ExportView {
    pub id: String,
    pub status: ExportStatus,
    pub created_at: String,
    pub size_bytes: Option<u64>,
    pub download_url: Option<String>,
    pub expires_at: Option<String>,
}

fn export_put(user_id: &str, export: &DataExport, expires_at: i64, condition: Condition) -> StoreResult<WriteOp> {
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(
            user_pk(user_id),
            schema::prefixed(EXPORT_PREFIX, &export.id),
            export,
            Some(expires_at),
        )?,
        condition,
    }))
}

/// `POST /v1/privacy/exports`: records the access request and a pending export, and has it built outside the
/// request ([`ExportBuilds`]); `GET /v1/privacy/exports/{id}` shows its status.
pub async fn create_export(ctx: &PrivacyContext, user_id: &str) -> ApiResult<DataExport> {
    let store = ctx.store.as_ref();
    active_account(store.account(user_id).await?)?;
    let now = ctx.clock.now();
    let expires_at = ctx.config.retention.until(Span::Exports, now);
    let request = Recorded::new(ctx, user_id, RequestKind::Access);
    let export = DataExport {
        id: format!("exp_{}", random_suffix()),
        status: ExportStatus::Pending,
        created_at: now,
        request_id: request.request.id.clone(),
        request_sk: request.sk.clone(),
        blob_key: None,
        size_bytes: None,
    };
    let received = OutboxMail::new(MailKind::PrivacyRequestReceived, user_id, now)
        .param("request_kind", "data access (export)")
        .param("request_id", request.request.id.clone())
        .param("due", crate::notifications::messages::in_ist(request.request.due_at));
    let ops =
        vec![request.put()?, export_put(user_id, &export, expires_at, Condition::NotExists)?, enqueue(&received)?];
    store.transact(ops).await?;
    if ctx.export_builds == ExportBuilds::InProcess {
        let (ctx, user_id, export_id) = (ctx.clone(), user_id.to_owned(), export.id.clone());
        crate::tasks::spawn("data export", async move {
            if let Err(e) = build_export(&ctx, &user_id, &export_id).await {
                tracing::error!(error = %e, %export_id, "data export not built");
            }
        });
    }
    Ok(export)
}

/// Builds a pending export: the document, its file, then the export marked ready (or failed) and its
/// access request completed, in one write conditioned on the export still pending. Safe to run any number
/// of times, concurrently (a stream record delivered twice): one build is recorded, an export that is no
/// longer pending is left as it is. Returns the export's status.
pub async fn build_export(ctx: &PrivacyContext, user_id: &str, export_id: &str) -> ApiResult<ExportStatus> {
    let Some((export, expires_at)) = stored_export(ctx, user_id, export_id).await? else {
        return Err(ApiError::Internal(format!("export {export_id} is not stored")));
    };
    if export.status != ExportStatus::Pending {
        return Ok(export.status);
    }
    let key = format!("exports/{user_id}/{export_id}.json");
    let built = async {
        let document = export_document(ctx, user_id).await?;
        let bytes = serde_json::to_vec_pretty(&document).map_err(|e| ApiError::Internal(e.to_string()))?;
        let size = bytes.len() as u64;
        ctx.blobs()?.put(&key, bytes, "application/json").await?;
        Ok::<u64, ApiError>(size)
    }
    .await;
    let outcome = match built {
        Ok(size) => Ok((key, size)),
        Err(e) => {
            tracing::error!(error = %e, %export_id, "data export failed");
            Err("the export could not be built; request a new one")
        }
    };
    finish_export(ctx, user_id, export, expires_at, outcome).await
}

/// How long an export may stay pending: beyond the exports function's tries (5 minutes each, three of
/// them), its stream record is lost, and its owner is told to ask again instead of waiting for ever.
const EXPORT_BUILD_DEADLINE: Duration = Duration::minutes(30);

/// A stored export and its expiry.
async fn stored_export(ctx: &PrivacyContext, user_id: &str, export_id: &str) -> ApiResult<Option<(DataExport, i64)>> {
    let item = ctx.store.get(Table::Main, &user_pk(user_id), &schema::prefixed(EXPORT_PREFIX, export_id)).await?;
    let Some(item) = item else { return Ok(None) };
    let export: DataExport = item.record()?;
    let expires_at = item.expires_at.unwrap_or_else(|| ctx.config.retention.until(Span::Exports, export.created_at));
    Ok(Some((export, expires_at)))
}

/// Records how a pending export ended (its file, or why not) and completes its access request, in one write
/// conditioned on the export still pending: when two builds race, the first record stands. Returns the
/// export's status as stored.
async fn finish_export(
    ctx: &PrivacyContext,
    user_id: &str,
    mut export: DataExport,
    expires_at: i64,
    outcome: Result<(String, u64), &str>,
) -> ApiResult<ExportStatus> {
    let store = ctx.store.as_ref();
    let request_item = store.get(Table::Main, &user_pk(user_id), &export.request_sk).await?;
    let request_item =
        request_item.ok_or_else(|| ApiError::Internal(format!("export {} has no request", export.id)))?;
    let mut request = Recorded {
        user_id: user_id.to_owned(),
        sk: export.request_sk.clone(),
        expires_at: request_item.expires_at.unwrap_or(i64::MAX),
        request: request_item.record()?,
    };
    let done = ctx.clock.now();
    match outcome {
        Ok((key, size)) => {
            export.status = ExportStatus::Ready;
            export.blob_key = Some(key);
            export.size_bytes = Some(size);
            request.finish(RequestStatus::Completed, format!("export {} ready ({size} bytes)", export.id), done);
        }
        Err(reason) => {
            export.status = ExportStatus::Failed;
            request.finish(RequestStatus::Failed, reason, done);
        }
    }
    let pending = Condition::AttrEquals("status".into(), json!(ExportStatus::Pending));
    let completed = OutboxMail::new(MailKind::PrivacyRequestCompleted, user_id, done)
        .param("request_kind", "data access (export)")
        .param("request_id", request.request.id.clone())
        .param(
            "outcome",
            match export.status {
                ExportStatus::Ready => {
                    format!(
                        "your export is ready to download from the dashboard for {} days",
                        ctx.config.retention.export_days
                    )
                }
                _ => "the export could not be built; please request a new one".to_owned(),
            },
        );
    let ops = vec![request.put()?, export_put(user_id, &export, expires_at, pending)?, enqueue(&completed)?];
    let recorded = store.transact(ops).await;
    if recorded.applied()?.is_none() {
        let stored = stored_export(ctx, user_id, &export.id).await?;
        return Ok(stored.map_or(export.status, |(stored, _)| stored.status));
    }
    Ok(export.status)
}

/// An export to build, named by a record of the main table's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportJob {
    /// The record's sequence number: what a partial batch failure reports back.
    pub record: String,
    pub user_id: String,
    pub export_id: String,
}

/// The exports a DynamoDB stream event asks for: records inserting an `EXPORT#` item of a user's partition
/// (the event source mapping's filter lets only those through; anything else is ignored here too).
pub fn export_jobs(event: &Value) -> Vec<ExportJob> {
    crate::store::stream_inserts(event)
        .into_iter()
        .filter_map(|key| {
            Some(ExportJob {
                user_id: schema::user_id_of(&key.pk)?.to_owned(),
                export_id: key.sk.strip_prefix(EXPORT_PREFIX)?.to_owned(),
                record: key.sequence,
            })
        })
        .collect()
}

/// `GET /v1/privacy/exports/{id}`: the owner's export only; anyone else's id is simply not found.
pub async fn export_view(ctx: &PrivacyContext, user_id: &str, export_id: &str) -> ApiResult<ExportView> {
    let not_found = || ApiError::NotFound {
        code: ErrorCode::ExportNotFound,
        message: format!("no export {export_id} (exports are kept 7 days)"),
    };
    if export_id.len() > 64 {
        return Err(not_found());
    }
    let (mut export, expires_at) = stored_export(ctx, user_id, export_id).await?.ok_or_else(not_found)?;
    let now = ctx.clock.now();
    if export.status == ExportStatus::Pending && now - export.created_at > EXPORT_BUILD_DEADLINE {
        let reason = "the export was not built in time; request a new one";
        finish_export(ctx, user_id, export, expires_at, Err(reason)).await?;
        // As stored: failed now, or built by a build that finished first.
        export = stored_export(ctx, user_id, export_id).await?.ok_or_else(not_found)?.0;
    }
    let link = match (&export.status, &export.blob_key) {
        (ExportStatus::Ready, Some(key)) => Some(ctx.blobs()?.download_link(key, EXPORT_LINK_VALIDITY, now).await?),
        _ => None,
    };
    let expires_at = link.as_ref().map(|_| timestamp(now + Duration::seconds(EXPORT_LINK_VALIDITY.as_secs() as i64)));
    Ok(ExportView {
        id: export.id,
        status: export.status,
        created_at: timestamp(export.created_at),
        size_bytes: export.size_bytes,
        download_url: link,
        expires_at,
    })
}

fn records(items: &[Item]) -> StoreResult<Vec<Value>> {
    items.iter().map(|i| Ok(Value::Object(i.attrs.clone()))).collect()
}

/// Everything held about the user, as one JSON document. The PAN is shown in full to its owner (decrypted
/// from the vault); the Aadhaar number stays masked, as UIDAI requires; keys appear as metadata only.
pub async fn export_document(ctx: &PrivacyContext, user_id: &str) -> ApiResult<Value> {
    let store = ctx.store.as_ref();
    let account = store.account(user_id).await?.ok_or_else(|| ApiError::Internal("account vanished".into()))?;
    let mut account_view = serde_json::to_value(AccountView::new(&account, &ctx.config.policy_version))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    account_view["status"] = json!(account.status);

    let logins: Vec<LoginAttemptView> =
        store.login_history(user_id, 1000).await?.iter().map(LoginAttemptView::from).collect();
    let kyc = kyc_export(ctx, user_id).await?;
    let keys: Vec<ApiKeyView> = store.keys(user_id).await?.iter().map(|(_, r)| ApiKeyView::from(r)).collect();
    let (topups, ledger) = payments_export(store, user_id).await?;
    // Usage and requests appear as the API shows them (rupee amounts, RFC 3339 times).
    let usage: Vec<UsageView> = all_with_prefix(store, user_id, schema::prefix::USAGE)
        .await?
        .iter()
        .map(|i| i.record::<UsageRecord>().map(|r| UsageView::from(&r)))
        .collect::<StoreResult<_>>()?;
    let requests: Vec<PrivacyRequestView> = all_with_prefix(store, user_id, REQUEST_PREFIX)
        .await?
        .iter()
        .map(|i| i.record::<PrivacyRequest>().map(|r| PrivacyRequestView::from(&r)))
        .collect::<StoreResult<_>>()?;
    Ok(json!({
        "format": "inferex-data-export/1",
        "generated_at": timestamp(ctx.clock.now()),
        "user_id": user_id,
        "account": account_view,
        "consents": records(&all_with_prefix(store, user_id, schema::prefix::CONSENT).await?)?,
        "login_history": logins,
        "kyc": kyc,
        "api_keys": keys,
        "wallet": WalletView::from(store.wallet(user_id).await?),
        "topups": topups,
        "ledger": ledger,
        "usage": usage,
        "privacy_requests": requests,
    }))
}

/// The export's KYC part: the record with the PAN revealed to its owner, and the operators' decisions.
async fn kyc_export(ctx: &PrivacyContext, user_id: &str) -> ApiResult<Value> {
    let store = ctx.store.as_ref();
    Ok(match store.kyc_record(user_id).await? {
        None => Value::Null,
        Some(record) => {
            let pan = kyc::reveal(store, ctx.kyc_keys()?, &record, DocumentKind::Pan).await?;
            let decisions = all_with_prefix(store, user_id, schema::prefix::KYC_DECISION).await?;
            json!({
                "status": record.status,
                "name_on_pan": record.name_on_pan,
                "pan": pan,
                "aadhaar_masked": record.aadhaar_masked,
                "submitted_at": timestamp(record.submitted_at),
                "verified_at": record.verified_at.map(timestamp),
                "rejection_reason": record.rejection_reason,
                "decisions": records(&decisions)?,
            })
        }
    })
}

/// The export's payment part: the account's top-ups and its ledger, as the API shows them.
async fn payments_export(store: &dyn ItemStore, user_id: &str) -> ApiResult<(Vec<Topup>, Vec<LedgerEntryView>)> {
    let mut topups = Vec::new();
    for index in all_with_prefix(store, user_id, schema::prefix::TOPUP).await? {
        if let Some(id) = index.attrs.get("topup_id").and_then(Value::as_str)
            && let Some(topup) = store.topup(id).await?
        {
            topups.push(topup);
        }
    }
    let ledger: Vec<LedgerEntryView> = all_with_prefix(store, user_id, schema::prefix::LEDGER)
        .await?
        .iter()
        .map(|i| i.record::<LedgerEntry>().map(|e| LedgerEntryView::from(&e)))
        .collect::<StoreResult<_>>()?;
    Ok((topups, ledger))
}

/// What `DELETE /v1/account` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Closure {
    pub status: &'static str,
    pub request: PrivacyRequestView,
    /// What is kept, and until when (RFC 3339).
    pub retained: Vec<RetainedData>,
    /// The unspent balance recorded for refund, in wallet units (0 when there was none).
    pub refund_requested: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetainedData {
    pub data: &'static str,
    pub until: String,
}

/// `DELETE /v1/account {password}`: closes the account in one transaction of at most 10 writes (the commit
/// point): the profile flips to closed with its password hash and marketing consent erased and its email
/// released; the wallet closes (no new holds) and its available balance moves, through a ledger entry,
/// into the account's single refund request; the KYC record gets its retention expiry and the claims are
/// released; the erasure request and a follow-up marker are recorded. Nothing changes unless all of it
/// commits, and any number of concurrent or retried closures close once and request one refund: the ones
/// that lose answer what the winner did. No session or key works from the commit on (sessions, logins and
/// new keys check that the account is open; the closed wallet takes no holds). The follow-up (sessions,
/// keys, exports, consents, vault entries, KYC decisions, the wallet registry) runs right after,
/// idempotently, and the scheduled jobs finish it if this request cannot.
pub async fn close_account(ctx: &PrivacyContext, user_id: &str, password: Option<String>) -> ApiResult<Closure> {
    let store = ctx.store.as_ref();
    let account = active_account(store.account(user_id).await?)?;
    confirm_password(ctx, &account, password, "password").await?;
    let retention = &ctx.config.retention;
    for _ in 0..CLOSE_ATTEMPTS {
        // The instances' purses stop first (no new call from them), their free money back on the wallet, so
        // the refund below counts it.
        wallet::metering::stop_purses(store, user_id).await?;
        let now = ctx.clock.now();
        let account_until = retention.expiry(ItemClass::Account, now).unwrap_or(i64::MAX);
        let mut request = Recorded::new(ctx, user_id, RequestKind::Erasure);
        let wallet_item = store.get(Table::Main, &user_pk(user_id), WALLET_SK).await?;
        // A purse funded between the stop and this read is stopped on the next round (a funding after this
        // read changes what the closing transaction expects of the wallet).
        if let Some(wallet_item) = &wallet_item
            && !wallet::metering::purses_stopped(store, user_id, wallet_item).await?
        {
            continue;
        }
        let (wallet_ops, refund) = wallet::closure_ops(&ctx.config, user_id, wallet_item.as_ref(), now)?;
        let (kyc_ops, kyc_until) = kyc::closure_ops(store, user_id, now, retention.kyc_years_after_closure).await?;
        let retained = retained_data(ctx, now, kyc_until);
        request.finish(RequestStatus::Completed, closure_outcome(&retained, refund), now);

        let mut ops = crate::accounts::closure_ops(&account, now, account_until, &request.sk);
        ops.extend(wallet_ops);
        ops.extend(kyc_ops);
        ops.push(request.put()?);
        ops.push(pending_closure_put(user_id, now, request.expires_at)?);
        match store.transact(ops).await {
            Ok(()) => {
                finish_closure(ctx, user_id).await?;
                return Ok(Closure {
                    status: "closed",
                    request: PrivacyRequestView::from(&request.request),
                    retained,
                    refund_requested: refund,
                });
            }
            Err(StoreError::ConditionFailed) => {
                if let Some(answer) = closure_lost(ctx, &account).await? {
                    return Ok(answer);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict {
        code: ErrorCode::AccountChanged,
        message: "the account is busy (calls are settling); retry the closure in a moment".into(),
        param: None,
    })
}

/// The marker that a closure's follow-up is not finished yet (the jobs walk them), in the closing transaction.
fn pending_closure_put(user_id: &str, closed_at: DateTime<Utc>, expires_at: i64) -> StoreResult<WriteOp> {
    let marker = json!({ "user_id": user_id, "closed_at": closed_at });
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(PENDING_CLOSURES_PK, user_id, &marker, Some(expires_at))?,
        condition: Condition::Always,
    }))
}

/// After a closing transaction's condition failed: the answer of a closure that won meanwhile, a conflict
/// if the account changed, or `None` to read the wallet again (a call settled) and retry.
async fn closure_lost(ctx: &PrivacyContext, account: &Account) -> ApiResult<Option<Closure>> {
    let current = ctx.store.account(&account.id).await?.ok_or_else(|| ApiError::Internal("account vanished".into()))?;
    if current.status == AccountStatus::Closed {
        // A concurrent or earlier closure won: answer what it did.
        return recorded_closure(ctx, &account.id).await.map(Some);
    }
    if current.email != account.email || current.password_hash != account.password_hash {
        return Err(ApiError::Conflict {
            code: ErrorCode::AccountChanged,
            message: "the account changed meanwhile; retry".into(),
            param: None,
        });
    }
    Ok(None)
}

/// What is kept after a closure at `closed_at`, and until when.
fn retained_data(ctx: &PrivacyContext, closed_at: DateTime<Utc>, kyc_until: Option<i64>) -> Vec<RetainedData> {
    let retention = &ctx.config.retention;
    let until = |at: i64| DateTime::from_timestamp(at, 0).map(timestamp).unwrap_or_default();
    let mut retained = vec![RetainedData {
        data: "account",
        until: until(retention.expiry(ItemClass::Account, closed_at).unwrap_or(i64::MAX)),
    }];
    if let Some(kyc_until) = kyc_until {
        retained.push(RetainedData { data: "kyc", until: until(kyc_until) });
    }
    let wallet_until = retention.expiry(ItemClass::Wallet, closed_at).unwrap_or(i64::MAX);
    retained.push(RetainedData { data: "payments", until: until(wallet_until) });
    retained.push(RetainedData { data: "usage_logs", until: until(retention.until(Span::Usage, closed_at)) });
    retained
}

fn closure_outcome(retained: &[RetainedData], refund: i64) -> String {
    let summary = retained.iter().map(|r| format!("{} until {}", r.data, r.until)).collect::<Vec<_>>().join("; ");
    let refund_note = if refund > 0 {
        format!("; refund of ₹{} requested", crate::money::format_inr(refund))
    } else {
        String::new()
    };
    format!(
        "account closed; erased: password, API keys, sessions, exports, email and KYC claims; kept: {summary}{refund_note}"
    )
}

/// The answer of a closure that already committed, rebuilt from what it stored.
async fn recorded_closure(ctx: &PrivacyContext, user_id: &str) -> ApiResult<Closure> {
    let store = ctx.store.as_ref();
    let profile = store
        .get(Table::Main, &user_pk(user_id), PROFILE_SK)
        .await?
        .ok_or_else(|| ApiError::Internal("account vanished".into()))?;
    let request_sk = profile.attrs.get("closure_request").and_then(Value::as_str).unwrap_or_default();
    let request: PrivacyRequest = store
        .get(Table::Main, &user_pk(user_id), request_sk)
        .await?
        .ok_or_else(|| ApiError::Internal("the closure's erasure request is missing".into()))?
        .record()?;
    let closed_at = request.completed_at.unwrap_or(request.received_at);
    let kyc_until = match store.kyc_record(user_id).await? {
        Some(_) => store.get(Table::Main, &user_pk(user_id), schema::sk::KYC).await?.and_then(|i| i.expires_at),
        None => None,
    };
    let refund = wallet::refund_request(store, user_id).await?.map_or(0, |r| r.amount);
    finish_closure(ctx, user_id).await?;
    Ok(Closure {
        status: "closed",
        request: PrivacyRequestView::from(&request),
        retained: retained_data(ctx, closed_at, kyc_until),
        refund_requested: refund,
    })
}

/// The follow-up of a committed closure, safe to run any number of times: API keys and exports (with their
/// files) are deleted, remaining sessions too; consents, KYC decisions and the wallet's registry entry get
/// their retention expiry; a refund owed is marked for the refunds job. Done, it removes the pending marker.
pub async fn finish_closure(ctx: &PrivacyContext, user_id: &str) -> ApiResult<()> {
    let store = ctx.store.as_ref();
    let Some(account) = store.account(user_id).await? else { return Ok(()) };
    let Some(closed_at) = account.closed_at.filter(|_| account.status == AccountStatus::Closed) else {
        return Ok(());
    };
    let retention = &ctx.config.retention;
    for (slot, key) in store.keys(user_id).await? {
        store.delete_key(user_id, &slot, &key.key_hash).await?;
    }
    for item in all_with_prefix(store, user_id, EXPORT_PREFIX).await? {
        if let Some(key) = item.attrs.get("blob_key").and_then(Value::as_str) {
            ctx.blobs()?.delete(key).await?;
        }
        store.delete(Delete { table: Table::Main, pk: item.pk, sk: item.sk, condition: Condition::Always }).await?;
    }
    for index in all_with_prefix(store, user_id, schema::prefix::SESSION).await? {
        store.transact(crate::auth::session_deletes(&index).to_vec()).await?;
    }
    let account_until = retention.expiry(ItemClass::Account, closed_at).unwrap_or(i64::MAX);
    let consents = all_with_prefix(store, user_id, schema::prefix::CONSENT).await?;
    accounts::expire_consents(store, &consents, account_until).await?;
    if let Some(kyc_until) =
        store.get(Table::Main, &user_pk(user_id), schema::sk::KYC).await?.and_then(|i| i.expires_at)
    {
        kyc::expire_after_closure(store, user_id, kyc_until).await?;
    }
    let wallet_until = retention.expiry(ItemClass::Wallet, closed_at).unwrap_or(i64::MAX);
    wallet::expire_registry(store, user_id, wallet_until).await?;
    // The closing transaction is at DynamoDB Local's size limit: the refunds job learns of the money here.
    wallet::closure_refunds::mark_due(store, &ctx.config, ctx.clock.now(), user_id).await?;
    store.delete(accounts::registry_delete(user_id)).await?;
    // The follow-up ends with the confirmation, once: only the run that removes the marker sends it (the
    // closing transaction is at its size limit). It goes to the address the account had.
    let kyc_until = store.get(Table::Main, &user_pk(user_id), schema::sk::KYC).await?.and_then(|i| i.expires_at);
    let retained = retained_data(ctx, closed_at, kyc_until);
    let date = |until: &str| {
        DateTime::parse_from_rfc3339(until)
            .map(|at| crate::notifications::messages::in_ist(at.to_utc()))
            .unwrap_or_else(|_| "the end of its retention".into())
    };
    let summary =
        retained.iter().map(|r| format!("{} until {}", r.data.replace('_', " "), date(&r.until))).collect::<Vec<_>>();
    let confirmation = OutboxMail::new(MailKind::AccountClosed, user_id, ctx.clock.now())
        .to(&account.email)
        .param("closed_on", crate::notifications::messages::in_ist(closed_at))
        .param("retained", summary.join("; "));
    let done = Delete {
        table: Table::Main,
        pk: PENDING_CLOSURES_PK.into(),
        sk: user_id.to_owned(),
        condition: Condition::Exists,
    };
    store.transact(vec![WriteOp::Delete(done), enqueue(&confirmation)?]).await.or_not_needed()?;
    Ok(())
}

/// For the scheduled jobs: finishes the follow-up of closures whose request could not (a store or blob
/// error after the commit). Returns how many were finished; one that fails again is logged and skipped.
pub async fn finish_pending_closures(ctx: &PrivacyContext, budget: std::time::Duration) -> ApiResult<usize> {
    let started = std::time::Instant::now();
    let mut finished = 0;
    let mut after = None;
    loop {
        // Paged, so closures that keep failing never hide the ones behind them.
        let page = ctx.store.query(Query::new(Table::Main, PENDING_CLOSURES_PK).limit(100).after(after)).await?;
        for item in page.items {
            if started.elapsed() >= budget {
                return Ok(finished);
            }
            match finish_closure(ctx, &item.sk).await {
                Ok(()) => finished += 1,
                Err(e) => tracing::error!(user_id = %item.sk, error = %e, "closure follow-up not finished this run"),
            }
        }
        after = page.next;
        if after.is_none() {
            return Ok(finished);
        }
    }
}
