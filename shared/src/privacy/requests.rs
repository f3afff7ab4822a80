//! The record of data-rights requests: each correction, export and closure a user asked for, with when it
//! was answered (the DPDP Act's response window).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

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
            },
            expires_at: ctx.ports.config.retention.until(Span::PrivacyRequests, now),
        }
    }

    pub(super) fn finish(&mut self, status: RequestStatus, outcome: impl Into<String>, at: DateTime<Utc>) {
        self.request.status = status;
        self.request.outcome = outcome.into();
        self.request.completed_at = Some(at);
    }

    pub(super) fn put(&self) -> StoreResult<WriteOp> {
        Ok(WriteOp::Put(Put {
            table: Table::Main,
            item: Item::from_record(user_pk(&self.user_id), &self.sk, &self.request, Some(self.expires_at))?,
            condition: Condition::Always,
        }))
    }
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
