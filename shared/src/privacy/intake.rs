//! Requests the dashboard's own routes do not cover: a grievance, or a correction the customer cannot make
//! themselves, written in the dashboard (`POST /v1/privacy/requests`), and any request an operator records
//! from an e-mail, a letter or a call (`POST /v1/admin/privacy-requests`), a closed account's or a nominee's
//! among them. Each enters its account's requests and the register ([`super::register`]) with its due date,
//! and its sender gets the acknowledgement by e-mail.

use serde::Deserialize;

use super::PrivacyContext;
use super::correction::active_account;
use super::register::{self, RegisterEntry};
use super::requests::{PrivacyRequestView, ReceivedVia, Recorded, RequestEvent, RequestKind, RequestStatus};
use crate::accounts::{AccountStore, normalize_email};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::notifications::enqueue;

/// Requests one account may have open from the dashboard at once (each reaches a person).
pub const MAX_OPEN_FROM_DASHBOARD: usize = 5;

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(ErrorCode::InvalidPrivacyRequest, field, message)
}

/// What `POST /v1/privacy/requests` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerRequest {
    /// `grievance`, or `correction` (of what the dashboard cannot change: the date of birth, KYC details).
    pub kind: RequestKind,
    pub message: String,
}

/// `POST /v1/privacy/requests`: a grievance (DPDP Act s.13) or a correction request, for a person to answer.
pub async fn submit(ctx: &PrivacyContext, user_id: &str, body: CustomerRequest) -> ApiResult<PrivacyRequestView> {
    match body.kind {
        RequestKind::Grievance | RequestKind::Correction => {}
        RequestKind::Access => return Err(invalid("kind", "ask for your data with POST /v1/privacy/exports")),
        RequestKind::Erasure => return Err(invalid("kind", "close the account with DELETE /v1/account")),
        RequestKind::Nominee => {
            return Err(invalid("kind", "a nominee writes to the grievance officer (GET /v1/privacy)"));
        }
    }
    let message = register::text(&body.message, "message", register::MAX_MESSAGE_CHARS)?;
    let store = ctx.ports.store.as_ref();
    active_account(store.account(user_id).await?)?;
    let recent = super::requests(store, user_id, 100).await?;
    if recent.iter().filter(|r| r.status == RequestStatus::Received).count() >= MAX_OPEN_FROM_DASHBOARD {
        return Err(ApiError::Conflict {
            code: ErrorCode::TooManyOpenRequests,
            message: format!(
                "{MAX_OPEN_FROM_DASHBOARD} requests are open already; each is answered within 30 days (GET /v1/privacy/requests)"
            ),
            param: None,
        });
    }
    let mut recorded = Recorded::new(ctx, user_id, body.kind);
    recorded.request.message = Some(message);
    let ops = vec![recorded.put()?, register::open_put(&recorded)?, enqueue(&register::acknowledgement(&recorded))?];
    store.transact(ops).await?;
    Ok(PrivacyRequestView::from(&recorded.request))
}

/// What `POST /v1/admin/privacy-requests` takes: a request received outside the dashboard.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutsideRequest {
    /// The account's address (an open account's, or one a closed account had).
    pub email: String,
    pub kind: RequestKind,
    /// `email`, `letter`, `phone` or `in_person`.
    pub received_via: ReceivedVia,
    /// How the operator checked who sent it (a reply from the account's address, a signed letter, ...).
    pub identity_check: String,
    /// What the person asked, in their words.
    #[serde(default)]
    pub message: Option<String>,
    /// Who wrote, when not the account's owner: a nominee's address (required for `nominee`).
    #[serde(default)]
    pub requester_email: Option<String>,
}

/// `POST /v1/admin/privacy-requests`: records a request that arrived by e-mail, letter or call in its
/// account's requests and the register, acknowledged by e-mail to whoever sent it.
pub async fn record_outside(ctx: &PrivacyContext, by: &str, body: OutsideRequest) -> ApiResult<RegisterEntry> {
    if body.received_via == ReceivedVia::Dashboard {
        return Err(invalid("received_via", "received_via must be email, letter, phone or in_person"));
    }
    let email = normalize_email(&body.email)?;
    let identity_check = register::text(&body.identity_check, "identity_check", register::MAX_NOTE_CHARS)?;
    // An empty message is no message: the request's kind says what was asked.
    let message = match body.message.as_deref().filter(|m| !m.trim().is_empty()) {
        Some(m) => Some(register::text(m, "message", register::MAX_MESSAGE_CHARS)?),
        None => None,
    };
    let requester = requester(&body)?;
    let store = ctx.ports.store.as_ref();
    let (user_id, _) = register::account_for_email(store, &email).await?;
    let mut recorded = Recorded::new(ctx, &user_id, body.kind);
    let now = recorded.request.received_at;
    let mut note = format!("recorded from {}; identity: {identity_check}", via_text(body.received_via));
    if body.kind == RequestKind::Nominee {
        note.push_str(&nominee_note(ctx, &user_id, requester.as_deref()).await?);
    }
    recorded.request.received_via = Some(body.received_via);
    recorded.request.identity_check = Some(identity_check);
    recorded.request.requester = requester;
    recorded.request.message = message;
    let mut ops = vec![register::open_put(&recorded)?, enqueue(&register::acknowledgement(&recorded))?];
    if recorded.request.requester.is_some() {
        // The holder hears of a nominee's request too: one made in their name while they can still act is
        // theirs to dispute.
        let mut to_holder = recorded.clone();
        to_holder.request.requester = None;
        ops.push(enqueue(&register::acknowledgement(&to_holder))?);
    }
    // An access request is answered by an export, built now; its link goes to the account's own address
    // (that mailbox is the proof of who asks), never to another requester.
    let export = match body.kind {
        RequestKind::Access => {
            note.push_str("; an export is being built, and its link is e-mailed to the account's address");
            let (export, put) = super::export::pending_export(ctx, &recorded, false, true)?;
            ops.push(put);
            Some(export.id)
        }
        _ => None,
    };
    recorded.request.timeline.push(RequestEvent { at: now, by: by.to_owned(), note });
    ops.push(recorded.put()?);
    store.transact(ops).await?;
    if let Some(export_id) = export {
        super::export::start_build(ctx, &user_id, &export_id);
    }
    tracing::info!(operator = %by, request_id = %recorded.request.id, kind = ?body.kind, "privacy request recorded");
    Ok(RegisterEntry::of(&user_id, recorded.request, now))
}

/// Who wrote, when not the account's owner: a nominee only (any other request is answered to the account's
/// own address), and a nominee's request must say who they are.
fn requester(body: &OutsideRequest) -> ApiResult<Option<String>> {
    match (&body.requester_email, body.kind) {
        (Some(_), kind) if kind != RequestKind::Nominee => {
            Err(invalid("requester_email", "requester_email is for a nominee's request only"))
        }
        (Some(raw), _) => normalize_email(raw)
            .map(Some)
            .map_err(|_| invalid("requester_email", "requester_email must be a valid email address")),
        (None, RequestKind::Nominee) => Err(invalid(
            "requester_email",
            "requester_email (the nominee's address) is required for a nominee's request",
        )),
        (None, _) => Ok(None),
    }
}

fn via_text(via: ReceivedVia) -> &'static str {
    match via {
        ReceivedVia::Dashboard => "the dashboard",
        ReceivedVia::Email => "an e-mail",
        ReceivedVia::Letter => "a letter",
        ReceivedVia::Phone => "a call",
        ReceivedVia::InPerson => "a visit",
    }
}

/// Whether a nominee's request comes from the nominee the account names (DPDP Act s.14): written into the
/// request's first step, for the operator deciding it.
async fn nominee_note(ctx: &PrivacyContext, user_id: &str, requester: Option<&str>) -> ApiResult<String> {
    Ok(match super::nominee::nominee(ctx, user_id).await? {
        Some(named) if Some(named.email.as_str()) == requester => {
            format!("; the requester is the account's named nominee, {}", named.name)
        }
        Some(_) => "; the requester is NOT the account's named nominee".to_owned(),
        None => "; the account names no nominee".to_owned(),
    })
}
