//! The register of data-rights requests not answered yet, across accounts: what the operators list by due
//! date (`GET /v1/admin/privacy-requests?due=soon|overdue`) and what the jobs alarm on. A request enters it
//! when received (from the dashboard, or recorded by an operator from an e-mail or a letter) and leaves it,
//! in the same transaction, when answered. The request itself stays in its account's partition, so the
//! customer sees every request, however it arrived, in `GET /v1/privacy/requests`.
//!
//! Item: `PRIVACYREQS#OPEN` / `<request id>`, naming the request's account, sort key, kind and due date.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::PrivacyContext;
use super::requests::{PrivacyRequest, ReceivedVia, Recorded, RequestEvent, RequestKind, RequestStatus};
use crate::accounts::{AccountStatus, AccountStore, timestamp, user_pk};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::store::{Condition, Conditional, Delete, Item, ItemStore, Put, Query, StoreResult, Table, WriteOp, schema};

/// A request this close to its due date is listed as due soon, and the jobs alarm on it.
pub const DUE_SOON: Duration = Duration::days(5);
/// Steps recorded on one request at most (a request that needs more is answered, or refused, by then).
pub const MAX_TIMELINE: usize = 50;
/// What a person may write with a request.
pub const MAX_MESSAGE_CHARS: usize = 4000;
/// An operator's note on a request, or how they checked the sender's identity.
pub const MAX_NOTE_CHARS: usize = 1000;
/// Open requests the register lists at most, soonest due first.
const MAX_LISTED: usize = 200;

/// An entry of the register: where the request is and when it is due.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OpenEntry {
    pub(super) id: String,
    pub(super) user_id: String,
    pub(super) request_sk: String,
    pub(super) kind: RequestKind,
    pub(super) due_at: DateTime<Utc>,
}

/// How close a request is to its due date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Due {
    Later,
    Soon,
    Overdue,
    /// Answered.
    Answered,
}

impl Due {
    fn of(request: &PrivacyRequest, now: DateTime<Utc>) -> Self {
        match request.status {
            RequestStatus::Received if request.due_at <= now => Due::Overdue,
            RequestStatus::Received if request.due_at - now <= DUE_SOON => Due::Soon,
            RequestStatus::Received => Due::Later,
            _ => Due::Answered,
        }
    }
}

/// A request as the register shows it to operators.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterEntry {
    pub id: String,
    pub user_id: String,
    pub kind: RequestKind,
    pub status: RequestStatus,
    pub due: Due,
    pub received_via: ReceivedVia,
    pub identity_check: Option<String>,
    pub requester: Option<String>,
    pub message: Option<String>,
    pub received_at: String,
    pub due_at: String,
    pub completed_at: Option<String>,
    pub outcome: String,
    pub timeline: Vec<RequestEvent>,
}

impl RegisterEntry {
    pub(super) fn of(user_id: &str, request: PrivacyRequest, now: DateTime<Utc>) -> Self {
        Self {
            id: request.id.clone(),
            user_id: user_id.to_owned(),
            kind: request.kind,
            status: request.status,
            due: Due::of(&request, now),
            received_via: request.received_via.unwrap_or(ReceivedVia::Dashboard),
            identity_check: request.identity_check,
            requester: request.requester,
            message: request.message,
            received_at: timestamp(request.received_at),
            due_at: timestamp(request.due_at),
            completed_at: request.completed_at.map(timestamp),
            outcome: request.outcome,
            timeline: request.timeline,
        }
    }
}

/// The register's entry of a request just received, to write with it.
pub(super) fn open_put(recorded: &Recorded) -> StoreResult<WriteOp> {
    let entry = OpenEntry {
        id: recorded.request.id.clone(),
        user_id: recorded.user_id.clone(),
        request_sk: recorded.sk.clone(),
        kind: recorded.request.kind,
        due_at: recorded.request.due_at,
    };
    let item = Item::from_record(schema::OPEN_PRIVACY_REQUESTS_PK, &entry.id, &entry, Some(recorded.expires_at))?;
    Ok(WriteOp::Put(Put { table: Table::Main, item, condition: Condition::NotExists }))
}

/// Takes an answered request out of the register; only once (the condition), so two answers never both
/// commit.
pub(super) fn open_delete(request_id: &str) -> WriteOp {
    WriteOp::Delete(Delete {
        table: Table::Main,
        pk: schema::OPEN_PRIVACY_REQUESTS_PK.into(),
        sk: request_id.to_owned(),
        condition: Condition::Exists,
    })
}

/// Takes a request its own flow answered (an export built or failed) out of the register, if it is there.
pub(super) fn open_release(request_id: &str) -> WriteOp {
    WriteOp::Delete(Delete {
        table: Table::Main,
        pk: schema::OPEN_PRIVACY_REQUESTS_PK.into(),
        sk: request_id.to_owned(),
        condition: Condition::Always,
    })
}

/// The acknowledgement of a request just received (DPDP Rules: the person knows it arrived and by when it
/// is answered), to the account's address or to the requester's (a nominee).
pub(super) fn acknowledgement(recorded: &Recorded) -> OutboxMail {
    let request = &recorded.request;
    let mail = OutboxMail::new(MailKind::PrivacyRequestReceived, &recorded.user_id, request.received_at)
        .param("request_kind", request.kind.described())
        .param("request_id", request.id.clone())
        .param("due", crate::notifications::messages::in_ist(request.due_at));
    match &request.requester {
        Some(requester) => mail.to(requester),
        None => mail,
    }
}

/// The e-mail telling the person a request was answered, and for a grievance where to go next.
pub(super) fn answer_mail(recorded: &Recorded, at: DateTime<Utc>) -> OutboxMail {
    let request = &recorded.request;
    let mut mail = OutboxMail::new(MailKind::PrivacyRequestCompleted, &recorded.user_id, at)
        .param("request_kind", request.kind.described())
        .param("request_id", request.id.clone())
        .param("outcome", request.outcome.clone());
    if request.kind == RequestKind::Grievance {
        mail = mail.param("next", super::BOARD_COMPLAINT);
    }
    match &request.requester {
        Some(requester) => mail.to(requester),
        None => mail,
    }
}

/// The request and its register entry, by the request's id; `privacy_request_not_found` for an id the
/// register does not hold (unknown, or answered already).
pub(super) async fn open_request(store: &dyn ItemStore, request_id: &str) -> ApiResult<(OpenEntry, Recorded, usize)> {
    let not_found = || ApiError::NotFound {
        code: ErrorCode::PrivacyRequestNotFound,
        message: format!("no open privacy request {request_id}"),
    };
    if request_id.len() > 64 {
        return Err(not_found());
    }
    let entry: OpenEntry =
        store.get(Table::Main, schema::OPEN_PRIVACY_REQUESTS_PK, request_id).await?.ok_or_else(not_found)?.record()?;
    let item = store.get(Table::Main, &user_pk(&entry.user_id), &entry.request_sk).await?.ok_or_else(not_found)?;
    let recorded = Recorded::of_item(&entry.user_id, &item)?;
    let steps = recorded.request.timeline.len();
    Ok((entry, recorded, steps))
}

/// Text written with a request (a message, a note, an answer, evidence): printable, at most `max`
/// characters, and never an identity number, which would sit in plain text in the register and the export.
pub(super) fn text(raw: &str, field: &str, max: usize) -> ApiResult<String> {
    let text = crate::accounts::written_text(raw, field, max, ErrorCode::InvalidPrivacyRequest)?;
    if crate::kyc::documents::holds_identity_number(&text) {
        let message = format!("{field} must not hold a PAN or Aadhaar number: describe the document instead");
        return Err(ApiError::invalid(ErrorCode::InvalidPrivacyRequest, field, message));
    }
    Ok(text)
}

/// Adds a step to a request (at most [`MAX_TIMELINE`]: a request that needs more is answered by then).
pub(super) fn push_step(recorded: &mut Recorded, by: &str, note: String, at: DateTime<Utc>) -> ApiResult<()> {
    if recorded.request.timeline.len() >= MAX_TIMELINE {
        let message = format!("a request holds at most {MAX_TIMELINE} steps: answer it");
        return Err(ApiError::invalid(ErrorCode::InvalidPrivacyRequest, "note", message));
    }
    recorded.request.timeline.push(RequestEvent { at, by: by.to_owned(), note });
    Ok(())
}

fn changed_meanwhile() -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::PrivacyRequestAnswered,
        message: "the request was answered or changed meanwhile; read it again".into(),
        param: None,
    }
}

/// `POST /v1/admin/privacy-requests/{id}/events`: a step of the request's handling, which its owner sees.
pub async fn add_note(ctx: &PrivacyContext, by: &str, request_id: &str, note: &str) -> ApiResult<RegisterEntry> {
    let note = text(note, "note", MAX_NOTE_CHARS)?;
    let store = ctx.ports.store.as_ref();
    let (_, mut recorded, steps) = open_request(store, request_id).await?;
    let now = ctx.ports.clock.now();
    push_step(&mut recorded, by, note, now)?;
    let still_open = WriteOp::Check(crate::store::Check {
        table: Table::Main,
        pk: schema::OPEN_PRIVACY_REQUESTS_PK.into(),
        sk: request_id.to_owned(),
        condition: Condition::Exists,
    });
    let written = store.transact(vec![recorded.put_if_unchanged(steps)?, still_open]).await.applied()?;
    written.ok_or_else(changed_meanwhile)?;
    Ok(RegisterEntry::of(&recorded.user_id, recorded.request, now))
}

/// How an operator answers a request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// `completed`, or `refused` (the outcome then gives the reasons).
    pub status: RequestStatus,
    pub outcome: String,
}

/// `POST /v1/admin/privacy-requests/{id}/answer`: records the answer, takes the request out of the register
/// and e-mails the person, in one transaction; a second answer finds nothing open.
pub async fn answer(ctx: &PrivacyContext, by: &str, request_id: &str, answer: Answer) -> ApiResult<RegisterEntry> {
    if !matches!(answer.status, RequestStatus::Completed | RequestStatus::Refused) {
        let message = "status must be completed or refused";
        return Err(ApiError::invalid(ErrorCode::InvalidPrivacyRequest, "status", message));
    }
    let outcome = text(&answer.outcome, "outcome", MAX_NOTE_CHARS)?;
    let store = ctx.ports.store.as_ref();
    let (_, mut recorded, steps) = open_request(store, request_id).await?;
    if recorded.request.kind == RequestKind::Access {
        // Its export answers it, with the file: an answer by hand would leave the export to answer again.
        let message = "an access request is answered by its export, when it is built";
        return Err(ApiError::Conflict {
            code: ErrorCode::PrivacyRequestAnswered,
            message: message.into(),
            param: None,
        });
    }
    let now = ctx.ports.clock.now();
    push_step(&mut recorded, by, format!("{}: {outcome}", json!(answer.status).as_str().unwrap_or("answered")), now)?;
    recorded.finish(answer.status, outcome, now);
    let ops = vec![recorded.put_if_unchanged(steps)?, open_delete(request_id), enqueue(&answer_mail(&recorded, now))?];
    store.transact(ops).await.applied()?.ok_or_else(changed_meanwhile)?;
    Ok(RegisterEntry::of(&recorded.user_id, recorded.request, now))
}

/// Which open requests to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DueFilter {
    /// Within [`DUE_SOON`] of the due date (not overdue yet).
    Soon,
    Overdue,
}

/// `GET /v1/admin/privacy-requests`: the open requests, soonest due first; `due` keeps those due soon or
/// overdue, `kind` one kind (the grievances' register is `kind=grievance`).
pub async fn open_requests(
    ctx: &PrivacyContext,
    due: Option<DueFilter>,
    kind: Option<RequestKind>,
) -> ApiResult<Vec<RegisterEntry>> {
    let store = ctx.ports.store.as_ref();
    let now = ctx.ports.clock.now();
    // The entries are small and carry the due date: all are read and sorted, then the soonest are shown.
    let mut entries: Vec<OpenEntry> = open_entries(store)
        .await?
        .into_iter()
        .filter(|entry| kind.is_none_or(|k| k == entry.kind))
        .filter(|entry| match due {
            None => true,
            Some(DueFilter::Soon) => entry.due_at > now && entry.due_at - now <= DUE_SOON,
            Some(DueFilter::Overdue) => entry.due_at <= now,
        })
        .collect();
    entries.sort_by_key(|entry| entry.due_at);
    let mut listed = Vec::new();
    for entry in entries.into_iter().take(MAX_LISTED) {
        let Some(item) = store.get(Table::Main, &user_pk(&entry.user_id), &entry.request_sk).await? else { continue };
        let mut request: PrivacyRequest = item.record()?;
        // The list shows how each arrived; its whole timeline is the request's own.
        request.timeline.truncate(1);
        listed.push(RegisterEntry::of(&entry.user_id, request, now));
    }
    Ok(listed)
}

/// Every entry of the register (one per open request: they leave when answered, so it stays small).
async fn open_entries(store: &dyn ItemStore) -> ApiResult<Vec<OpenEntry>> {
    let query = Query::new(Table::Main, schema::OPEN_PRIVACY_REQUESTS_PK).limit(1000);
    crate::store::all_pages(store, query).await?.iter().map(|item| Ok(item.record::<OpenEntry>()?)).collect()
}

/// What the jobs found in the register.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DueReport {
    pub open: usize,
    pub due_soon: usize,
    pub overdue: usize,
}

/// For the jobs: counts the open requests due soon and overdue, and raises the `privacy_request_due` alert
/// while there is any (every run, so the alarm stays on until each is answered).
pub async fn check_due(ctx: &PrivacyContext) -> ApiResult<DueReport> {
    let now = ctx.ports.clock.now();
    let mut report = DueReport::default();
    for entry in open_entries(ctx.ports.store.as_ref()).await? {
        report.open += 1;
        if entry.due_at <= now {
            report.overdue += 1;
        } else if entry.due_at - now <= DUE_SOON {
            report.due_soon += 1;
        }
    }
    if report.due_soon + report.overdue > 0 {
        tracing::error!(
            alert = crate::alerts::PRIVACY_REQUEST_DUE,
            due_soon = report.due_soon,
            overdue = report.overdue,
            "data-rights requests are due within 5 days or overdue: answer them (GET /v1/admin/privacy-requests)"
        );
    }
    Ok(report)
}

/// The account an outside request names by e-mail: the open account with the address, else the latest
/// closed one that had it (kept accounts only).
pub(super) async fn account_for_email(store: &dyn ItemStore, email: &str) -> ApiResult<(String, AccountStatus)> {
    if let Some(account) = store.account_by_email(email).await? {
        return Ok((account.id, account.status));
    }
    let closed = crate::accounts::closed_accounts_with_email(store, email).await?;
    let mut latest: Option<(DateTime<Utc>, String)> = None;
    for user_id in closed {
        if let Some(account) = store.account(&user_id).await?
            && let Some(closed_at) = account.closed_at
            && latest.as_ref().is_none_or(|(at, _)| closed_at > *at)
        {
            latest = Some((closed_at, user_id));
        }
    }
    let (_, user_id) = latest.ok_or_else(|| ApiError::NotFound {
        code: ErrorCode::AccountNotFound,
        message: "no account, open or closed, has this email: answer the sender directly".into(),
    })?;
    Ok((user_id, AccountStatus::Closed))
}
