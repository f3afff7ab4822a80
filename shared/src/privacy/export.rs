//! Data exports: asked for by the user, built outside the request, and kept for a short window.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::correction::active_account;
use super::requests::{PrivacyRequest, PrivacyRequestView, Recorded, RequestKind, RequestStatus};
use super::{EXPORT_LINK_VALIDITY, EXPORT_PREFIX, ExportBuilds, PrivacyContext, REQUEST_PREFIX};
use crate::accounts::{AccountStore, AccountView, timestamp, user_pk};
use crate::auth::LoginAttemptView;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::keys::{ApiKeyView, KeyStore};
use crate::kyc::{self, DocumentKind, KycStore};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::retention::Span;
use crate::secrets::random_suffix;
use crate::store::{Condition, Conditional, Item, Put, StoreResult, Table, WriteOp, schema};

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
    /// The PAN in full: asked for with the account's password ([`ExportRequest`]); masked otherwise.
    #[serde(default)]
    pub full_pan: bool,
    /// Asked for outside the dashboard (by e-mail, a closed account's among them): its link is e-mailed to
    /// the account's address when it is ready.
    #[serde(default)]
    pub by_mail: bool,
}

/// What `POST /v1/privacy/exports` may carry: the password, to have the PAN in full (a session alone, which
/// a stolen cookie or an unlocked laptop gives, gets it masked).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    pub password: Option<String>,
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
    /// The file holds the PAN in full: its link is given only with the password again
    /// (`POST /v1/privacy/exports/{id}/download`), never to a session alone.
    pub pan_in_full: bool,
    pub download_needs_password: bool,
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
pub async fn create_export(ctx: &PrivacyContext, user_id: &str, request: ExportRequest) -> ApiResult<DataExport> {
    let store = ctx.ports.store.as_ref();
    let account = active_account(store.account(user_id).await?)?;
    // An empty password asks for nothing more than a session gets.
    let full_pan = request.password.as_ref().is_some_and(|p| !p.is_empty());
    if full_pan {
        super::correction::confirm_password(ctx, &account, request.password, "password").await?;
    }
    let request = Recorded::new(ctx, user_id, RequestKind::Access);
    let received = OutboxMail::new(MailKind::PrivacyRequestReceived, user_id, request.request.received_at)
        .param("request_kind", "data access (export)")
        .param("request_id", request.request.id.clone())
        .param("due", crate::notifications::messages::in_ist(request.request.due_at));
    let (export, export_put) = pending_export(ctx, &request, full_pan, false)?;
    let ops = vec![request.put()?, super::register::open_put(&request)?, export_put, enqueue(&received)?];
    store.transact(ops).await?;
    start_build(ctx, user_id, &export.id);
    Ok(export)
}

/// A pending export answering `request`, and its write (to commit with the request).
pub(super) fn pending_export(
    ctx: &PrivacyContext,
    request: &Recorded,
    full_pan: bool,
    by_mail: bool,
) -> ApiResult<(DataExport, WriteOp)> {
    let now = request.request.received_at;
    let expires_at = ctx.ports.config.retention.until(Span::Exports, now);
    let export = DataExport {
        id: format!("exp_{}", random_suffix()),
        status: ExportStatus::Pending,
        created_at: now,
        request_id: request.request.id.clone(),
        request_sk: request.sk.clone(),
        blob_key: None,
        size_bytes: None,
        full_pan,
        by_mail,
    };
    let put = export_put(&request.user_id, &export, expires_at, Condition::NotExists)?;
    Ok((export, put))
}

/// Has a committed pending export built: by a task here, or (in AWS) by the exports function, which the
/// export's insertion reaches through the main table's stream.
pub(super) fn start_build(ctx: &PrivacyContext, user_id: &str, export_id: &str) {
    if ctx.export_builds == ExportBuilds::InProcess {
        let (ctx, user_id, export_id) = (ctx.clone(), user_id.to_owned(), export_id.to_owned());
        crate::tasks::spawn("data export", async move {
            if let Err(e) = build_export(&ctx, &user_id, &export_id).await {
                tracing::error!(error = %e, %export_id, "data export not built");
            }
        });
    }
}

/// Builds a pending export: the document, its file, then the export marked ready (or failed) and its
/// access request completed, in one write conditioned on the export still pending. Safe to run any number
/// of times, concurrently (a stream record delivered twice): one build is recorded, an export that is no
/// longer pending is left as it is. Returns the export's status.
pub async fn build_export(ctx: &PrivacyContext, user_id: &str, export_id: &str) -> ApiResult<ExportStatus> {
    // Not stored (not readable yet, or its account's closure took it): handed back, for the stream's few tries.
    let Some((export, expires_at)) = stored_export(ctx, user_id, export_id).await? else {
        return Err(ApiError::Internal(format!("export {export_id} is not stored")));
    };
    if export.status != ExportStatus::Pending {
        return Ok(export.status);
    }
    let key = format!("exports/{user_id}/{export_id}.json");
    let built = async {
        let document = export_document(ctx, user_id, export.full_pan).await?;
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
    let item = ctx.ports.store.get(Table::Main, &user_pk(user_id), &schema::prefixed(EXPORT_PREFIX, export_id)).await?;
    let Some(item) = item else { return Ok(None) };
    let export: DataExport = item.record()?;
    let expires_at =
        item.expires_at.unwrap_or_else(|| ctx.ports.config.retention.until(Span::Exports, export.created_at));
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
    let done = ctx.ports.clock.now();
    match &outcome {
        Ok((key, size)) => {
            export.status = ExportStatus::Ready;
            export.blob_key = Some(key.clone());
            export.size_bytes = Some(*size);
        }
        Err(_) => export.status = ExportStatus::Failed,
    }
    // A step an operator adds meanwhile changes the request: read it again and keep the step.
    for _ in 0..FINISH_ATTEMPTS {
        let Some(mut request) = open_access_request(ctx, user_id, &export).await? else { break };
        let steps = request.request.timeline.len();
        match &outcome {
            Ok((_, size)) => {
                let outcome = format!("export {} ready ({size} bytes)", export.id);
                request.finish(RequestStatus::Completed, outcome, done);
            }
            Err(reason) => request.finish(RequestStatus::Failed, *reason, done),
        }
        let pending = Condition::AttrEquals("status".into(), json!(ExportStatus::Pending));
        let ops = vec![
            request.put_if_unchanged(steps)?,
            super::register::open_release(&request.request.id),
            export_put(user_id, &export, expires_at, pending)?,
            enqueue(&completion_mail(ctx, &export, &request, expires_at))?,
        ];
        if ctx.ports.store.transact(ops).await.applied()?.is_some() {
            return Ok(export.status);
        }
    }
    // Another build, or the closure, recorded it first: as stored.
    let stored = stored_export(ctx, user_id, &export.id).await?;
    Ok(stored.map_or(ExportStatus::Failed, |(stored, _)| stored.status))
}

/// Tries at recording an export's end while operators add steps to its request.
const FINISH_ATTEMPTS: usize = 3;

/// The access request an export answers, while it is still open; `None` once it was answered.
async fn open_access_request(ctx: &PrivacyContext, user_id: &str, export: &DataExport) -> ApiResult<Option<Recorded>> {
    let item = ctx.ports.store.get(Table::Main, &user_pk(user_id), &export.request_sk).await?;
    let item = item.ok_or_else(|| ApiError::Internal(format!("export {} has no request", export.id)))?;
    let request = Recorded::of_item(user_id, &item)?;
    Ok((request.request.status == RequestStatus::Received).then_some(request))
}

/// At closure: a pending export is not built (its file would outlive the closure); its request is answered.
pub(super) async fn abandon_pending(ctx: &PrivacyContext, user_id: &str, export_id: &str) -> ApiResult<()> {
    if let Some((export, expires_at)) = stored_export(ctx, user_id, export_id).await?
        && export.status == ExportStatus::Pending
    {
        let reason = "the account was closed before the export was built";
        finish_export(ctx, user_id, export, expires_at, Err(reason)).await?;
    }
    Ok(())
}

/// The e-mail that the export (and so its access request) is done: where to download it, or to ask again.
fn completion_mail(ctx: &PrivacyContext, export: &DataExport, request: &Recorded, expires_at: i64) -> OutboxMail {
    let days = ctx.ports.config.retention.export_days;
    let mail = OutboxMail::new(MailKind::PrivacyRequestCompleted, &request.user_id, ctx.ports.clock.now())
        .param("request_kind", "data access (export)")
        .param("request_id", request.request.id.clone());
    match (export.status, export.by_mail) {
        // The mailer mints the link when it sends the message, to the account's own address.
        (ExportStatus::Ready, true) => mail
            .param("outcome", format!("your export is ready: the link below works for {days} days"))
            .param("export_id", export.id.clone())
            .param("link_expires_at", expires_at),
        (ExportStatus::Ready, false) => {
            mail.param("outcome", format!("your export is ready to download from the dashboard for {days} days"))
        }
        (_, true) => {
            mail.param("outcome", "the export could not be built; write to us again and we will build it anew")
        }
        _ => mail.param("outcome", "the export could not be built; please request a new one"),
    }
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
pub async fn export_view(
    ctx: &PrivacyContext,
    user_id: &str,
    export_id: &str,
    password: Option<String>,
) -> ApiResult<ExportView> {
    let not_found = || ApiError::NotFound {
        code: ErrorCode::ExportNotFound,
        message: format!("no export {export_id} (exports are kept 7 days)"),
    };
    if export_id.len() > 64 {
        return Err(not_found());
    }
    let (mut export, expires_at) = stored_export(ctx, user_id, export_id).await?.ok_or_else(not_found)?;
    let now = ctx.ports.clock.now();
    if export.status == ExportStatus::Pending && now - export.created_at > EXPORT_BUILD_DEADLINE {
        let reason = "the export was not built in time; request a new one";
        finish_export(ctx, user_id, export, expires_at, Err(reason)).await?;
        // As stored: failed now, or built by a build that finished first.
        export = stored_export(ctx, user_id, export_id).await?.ok_or_else(not_found)?.0;
    }
    let proven = match password {
        Some(password) => {
            let account = active_account(ctx.ports.store.account(user_id).await?)?;
            super::correction::confirm_password(ctx, &account, Some(password), "password").await?;
            true
        }
        None => false,
    };
    let needs_password = export.full_pan && !proven;
    let link = match (&export.status, &export.blob_key) {
        (ExportStatus::Ready, Some(key)) if !needs_password => {
            Some(ctx.blobs()?.download_link(key, EXPORT_LINK_VALIDITY, now).await?)
        }
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
        pan_in_full: export.full_pan,
        download_needs_password: needs_password && export.status == ExportStatus::Ready,
    })
}

/// Everything held about the user, as one JSON document. The PAN is shown in full to its owner (decrypted
/// from the vault) when they asked with their password (`full_pan`), else masked; of the Aadhaar only the last four digits exist (DigiLocker shares no more); keys appear
/// as metadata only.
pub async fn export_document(ctx: &PrivacyContext, user_id: &str, full_pan: bool) -> ApiResult<Value> {
    let store = ctx.ports.store.as_ref();
    let account = store.account(user_id).await?.ok_or_else(|| ApiError::Internal("account vanished".into()))?;
    let residency = crate::account_limits::residency_of(store, user_id).await?;
    let view = AccountView::new(&account, &ctx.ports.config.policy_version).residing(residency);
    let mut account_view = serde_json::to_value(view).map_err(|e| ApiError::Internal(e.to_string()))?;
    account_view["status"] = json!(account.status);

    let logins: Vec<LoginAttemptView> =
        crate::auth::login_export(store, user_id).await?.iter().map(LoginAttemptView::from).collect();
    let kyc = kyc_export(ctx, user_id, full_pan).await?;
    let now = ctx.ports.clock.now();
    let records: Vec<_> = store.keys(user_id).await?.into_iter().map(|(_, record)| record).collect();
    let keys = ApiKeyView::all(store, &records, now).await?;
    let (topups, ledger) = crate::wallet::export_for(store, user_id).await?;
    // Usage and requests appear as the API shows them (rupee amounts, RFC 3339 times).
    let usage = crate::usage::export_for(store, user_id).await?;
    let requests: Vec<PrivacyRequestView> = crate::store::user_items(store, user_id, REQUEST_PREFIX)
        .await?
        .iter()
        .map(|i| i.record::<PrivacyRequest>().map(|r| PrivacyRequestView::from(&r)))
        .collect::<StoreResult<_>>()?;
    let topup_ids: Vec<String> = topups.iter().map(|t| t.id.clone()).collect();
    let payments = payments_export(store, user_id, &topup_ids).await?;
    let mut document = json!({
        "format": "inferex-data-export/1",
        "generated_at": timestamp(ctx.ports.clock.now()),
        "user_id": user_id,
        "account": account_view,
        "consents": crate::accounts::consents(store, user_id).await?,
        "login_history": logins,
        "kyc": kyc,
        "api_keys": keys,
        "wallet": crate::wallet::wallet_view(store, user_id, now).await?,
        "billing_profile": crate::billing::export_for(store, user_id).await?,
        "nominee": super::nominee::nominee(ctx, user_id).await?,
        "tax_documents": crate::gst::documents::export_for(store, user_id).await?,
        "spend_alerts": crate::spend::list_alerts(store, user_id).await?,
        "topups": topups,
        "ledger": ledger,
        "usage": usage,
        "privacy_requests": requests,
        "sessions": crate::auth::sessions_export(store, user_id).await?,
        "limits": crate::account_limits::account_limits(store, user_id).await?,
        "mail": { "suppressed": crate::notifications::delivery::suppression_of(store, &account.email).await? },
        "processors": super::coverage::processors(super::consent::model_providers()),
    });
    if let (Some(document), Value::Object(payments)) = (document.as_object_mut(), payments) {
        document.extend(payments);
    }
    Ok(document)
}

/// The money sections beyond the ledger: payments with the payer's details, reviews of them, the refund
/// request of a closed account, disputes.
async fn payments_export(store: &dyn crate::store::ItemStore, user_id: &str, topup_ids: &[String]) -> ApiResult<Value> {
    let payments = crate::wallet::closure_refunds::export_for(store, user_id).await?;
    let payment_ids: Vec<String> =
        payments.iter().filter_map(|p| p["payment_id"].as_str()).map(str::to_owned).collect();
    let of = crate::wallet::AccountMoney { user_id, topup_ids, payment_ids: &payment_ids };
    Ok(json!({
        "payments": payments,
        "payment_reviews": crate::wallet::payment_reviews_for(store, of).await?,
        "refund_request": crate::wallet::refund_request(store, user_id).await?,
        "disputes": crate::wallet::disputes_export(store, user_id).await?,
    }))
}

/// The export's KYC part: the record with the PAN revealed to its owner, each step with the provider's
/// answer, the consent records of the checks, and the operators' decisions.
async fn kyc_export(ctx: &PrivacyContext, user_id: &str, full_pan: bool) -> ApiResult<Value> {
    let store = ctx.ports.store.as_ref();
    Ok(match store.kyc_record(user_id).await? {
        None => Value::Null,
        Some(record) => {
            let pan = match full_pan {
                true => kyc::reveal(store, ctx.kyc_keys()?, &record, DocumentKind::Pan).await?,
                false => Some(record.pan_masked.clone()),
            };
            let decisions = kyc::decisions(store, user_id).await?;
            let consents = kyc::consents(store, user_id).await?;
            json!({
                "status": record.status,
                "holder": record.holder,
                "name_on_pan": record.name_on_pan,
                "pan": pan,
                "pan_in_full": full_pan,
                // The judged outcome and the provider's reference: the provider's evidence (a registered
                // name, a score) can be another person's, so it is for operators only.
                "pan_check": {
                    "status": record.pan.status,
                    "provider_reference": record.pan.answer.as_ref().map(|a| a.reference_id.clone()),
                },
                "gstin": record.gstin,
                "aadhaar_status": record.aadhaar.status,
                "aadhaar_masked": record.aadhaar_masked,
                "aadhaar_name_for_review": record.aadhaar.name_for_review,
                "digilocker_reference": record.aadhaar.reference_id,
                // True only until the erasure reaches a number held from before DigiLocker.
                "aadhaar_number_kept": record.aadhaar_ref.is_some(),
                "submitted_at": timestamp(record.submitted_at),
                "verified_at": record.verified_at.map(timestamp),
                "rejection_reason": record.rejection_reason,
                "consents": consents,
                "decisions": decisions,
            })
        }
    })
}

/// `GET /v1/privacy/export-link?token=…`: where a mailed export link leads, a fresh 15-minute link to the
/// file, while the export is kept. Anything else (a token unknown or expired, an export gone) is not found.
pub async fn export_link_target(ctx: &PrivacyContext, token: &str) -> ApiResult<String> {
    let not_found = || ApiError::NotFound {
        code: ErrorCode::ExportNotFound,
        message: "this link is unknown or has expired: ask again for your data".into(),
    };
    if token.is_empty() || token.len() > 128 {
        return Err(not_found());
    }
    let link = crate::links::export_link(ctx.ports.store.as_ref(), token).await?.ok_or_else(not_found)?;
    let (export, _) = stored_export(ctx, &link.user_id, &link.export_id).await?.ok_or_else(not_found)?;
    let key = match (export.status, export.blob_key) {
        (ExportStatus::Ready, Some(key)) if export.by_mail => key,
        _ => return Err(not_found()),
    };
    Ok(ctx.blobs()?.download_link(&key, EXPORT_LINK_VALIDITY, ctx.ports.clock.now()).await?)
}
