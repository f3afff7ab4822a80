//! The record of data-rights requests: each correction, export and closure a user asked for, with when it
//! was answered (the DPDP Act's response window).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{PrivacyContext, REQUEST_PREFIX, RESPONSE_DAYS};
use crate::accounts::{time_sort_key, timestamp, user_pk};
use crate::error::ApiResult;
use crate::retention::Span;
use crate::secrets::random_suffix;
use crate::store::{Condition, Item, ItemStore, Put, Query, SortKeyRange, StoreResult, Table, WriteOp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Access,
    Correction,
    Erasure,
    /// A complaint about how we handled the person's data or a request (DPDP Act s.13).
    Grievance,
    /// A nominee exercising the rights of a person who died or cannot act (DPDP Act s.14; operators only).
    Nominee,
}

impl RequestKind {
    /// How the e-mails name it.
    pub fn described(self) -> &'static str {
        match self {
            RequestKind::Access => "data access",
            RequestKind::Correction => "correction",
            RequestKind::Erasure => "erasure",
            RequestKind::Grievance => "grievance",
            RequestKind::Nominee => "nominee's",
        }
    }
}

/// How a request reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceivedVia {
    Dashboard,
    Email,
    Letter,
    Phone,
    InPerson,
}

/// One step of a request's handling, shown to the person it concerns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestEvent {
    pub at: DateTime<Utc>,
    /// The operator who wrote it (kept for the register; the customer sees "InferexAI").
    pub by: String,
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Received,
    Completed,
    Failed,
    /// Declined with the reasons stated in its outcome (DPDP Rules: a refusal says why).
    Refused,
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
    /// Absent: the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_via: Option<ReceivedVia>,
    /// For a request from outside the dashboard: how the operator checked who sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_check: Option<String>,
    /// The address it came from, when not the account's own (a nominee's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// What the person wrote (a grievance, a correction the dashboard cannot make).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<RequestEvent>,
}

/// One step as the customer sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestEventView {
    pub at: String,
    pub note: String,
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
    pub received_via: ReceivedVia,
    pub message: Option<String>,
    pub timeline: Vec<RequestEventView>,
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
            received_via: r.received_via.unwrap_or(ReceivedVia::Dashboard),
            message: r.message.clone(),
            timeline: r
                .timeline
                .iter()
                .map(|e| RequestEventView { at: timestamp(e.at), note: e.note.clone() })
                .collect(),
        }
    }
}

/// A request being handled: the record and where it is stored.
#[derive(Clone)]
pub(super) struct Recorded {
    pub(super) user_id: String,
    pub(super) sk: String,
    pub(super) request: PrivacyRequest,
    pub(super) expires_at: i64,
}

impl Recorded {
    pub(super) fn new(ctx: &PrivacyContext, user_id: &str, kind: RequestKind) -> Self {
        let now = ctx.ports.clock.now();
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
                received_via: None,
                identity_check: None,
                requester: None,
                message: None,
                timeline: Vec::new(),
            },
            expires_at: ctx.ports.config.retention.until(Span::PrivacyRequests, now),
        }
    }

    pub(super) fn finish(&mut self, status: RequestStatus, outcome: impl Into<String>, at: DateTime<Utc>) {
        self.request.status = status;
        self.request.outcome = outcome.into();
        self.request.completed_at = Some(at);
    }

    /// The request's item, new (or rewritten whole by the flow that owns it alone: a correction, a closure).
    pub(super) fn put(&self) -> StoreResult<WriteOp> {
        Ok(WriteOp::Put(Put { table: Table::Main, item: self.item()?, condition: Condition::Always }))
    }

    /// The request's item, written only while it is still open and no step was added since it was read
    /// (`steps_read`): two people working on one request never overwrite each other.
    pub(super) fn put_if_unchanged(&self, steps_read: usize) -> StoreResult<WriteOp> {
        let unchanged = Condition::All(vec![
            Condition::AttrEquals("status".into(), json!(RequestStatus::Received)),
            Condition::AttrAbsentOrEquals(STEPS.into(), json!(steps_read)),
        ]);
        Ok(WriteOp::Put(Put { table: Table::Main, item: self.item()?, condition: unchanged }))
    }

    fn item(&self) -> StoreResult<Item> {
        let mut item = Item::from_record(user_pk(&self.user_id), &self.sk, &self.request, Some(self.expires_at))?;
        item.attrs.insert(STEPS.into(), json!(self.request.timeline.len()));
        Ok(item)
    }

    /// A stored request, with where it is and its expiry.
    pub(super) fn of_item(user_id: &str, item: &Item) -> StoreResult<Self> {
        Ok(Self {
            user_id: user_id.to_owned(),
            sk: item.sk.clone(),
            expires_at: item.expires_at.unwrap_or(i64::MAX),
            request: item.record()?,
        })
    }
}

/// The count of a request's steps, written with it: what a change is conditioned on.
const STEPS: &str = "timeline_count";

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
