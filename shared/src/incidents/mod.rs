//! Security incidents: the record operators keep of one, with its timeline and the deadlines the law sets
//! from the moment it was detected (CERT-In's directions of 28 April 2022: reported within 6 hours; DPDP
//! Rules 2025, rule 7(2): the Board told without delay, and its detailed report within 72 hours), and the
//! security notices sent to the people it touched (rule 7(1), `notices`), and containment: every session and
//! API key of an account, or of everyone, revoked (`revoke`).
//!
//! One item per incident (`INCIDENT#<id>` / `INCIDENT`) with its events (at most [`MAX_EVENTS`]), and a
//! registry of incidents newest first (`INCIDENTS` / `<opened millis>#<id>`).

mod notices;
mod revoke;

pub use notices::{NoticeOutcome, Recipients, SecurityMessage, SecurityNotice, Touch, send_notice};
pub use revoke::{RevokeEveryone, Revoked, revoke_account, revoke_everyone};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ports::Ports;
use crate::retention::INCIDENT_RECORD_LIFETIME;
use crate::secrets::random_suffix;
use crate::store::schema::{self, INCIDENTS_PK, sk};
use crate::store::{Condition, Conditional, Item, ItemStore, Put, Query, Table, WriteOp};

/// CERT-In's report is due this long after detection.
pub const CERT_IN_WITHIN: Duration = Duration::hours(6);
/// The Board's detailed report is due this long after becoming aware.
pub const BOARD_REPORT_WITHIN: Duration = Duration::hours(72);
/// Events one incident may record (each note at most 2,000 characters: the item stays far below DynamoDB's
/// 400 KB).
pub const MAX_EVENTS: usize = 100;
const MAX_TEXT: usize = 2000;

/// What happened in an incident's handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Contained,
    CertInReported,
    BoardInformed,
    BoardReportSent,
    /// Security notices queued to the people affected (recorded by [`send_notice`]).
    NoticeSent,
    Note,
    Closed,
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// When it happened, as the operator says.
    pub at: DateTime<Utc>,
    /// When it was recorded: an `at` written later than the fact is visible as such.
    #[serde(default = "Utc::now")]
    pub recorded_at: DateTime<Utc>,
    pub by: String,
    pub note: String,
}

/// An incident as stored and shown, with its deadlines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub title: String,
    pub summary: String,
    pub detected_at: DateTime<Utc>,
    pub opened_by: String,
    pub opened_at: DateTime<Utc>,
    pub events: Vec<Event>,
}

/// An incident with where its deadlines stand, as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    #[serde(flatten)]
    pub incident: Incident,
    pub cert_in_due_at: DateTime<Utc>,
    pub board_report_due_at: DateTime<Utc>,
    pub cert_in_reported: bool,
    pub board_informed: bool,
    pub board_report_sent: bool,
    pub closed: bool,
    pub event_count: usize,
}

impl IncidentView {
    pub fn of(incident: Incident) -> Self {
        let happened = |kind| incident.events.iter().any(|e| e.kind == kind);
        Self {
            cert_in_due_at: incident.detected_at + CERT_IN_WITHIN,
            board_report_due_at: incident.detected_at + BOARD_REPORT_WITHIN,
            cert_in_reported: happened(EventKind::CertInReported),
            board_informed: happened(EventKind::BoardInformed),
            board_report_sent: happened(EventKind::BoardReportSent),
            closed: happened(EventKind::Closed),
            event_count: incident.events.len(),
            incident,
        }
    }
}

/// What opens an incident.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIncident {
    pub title: String,
    pub summary: String,
    /// When it was detected (the deadlines run from here); now, if absent.
    pub detected_at: Option<DateTime<Utc>>,
}

/// What an operator adds to a timeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    pub kind: EventKind,
    pub note: String,
    pub at: Option<DateTime<Utc>>,
}

/// Text an operator writes: 1 to [`MAX_TEXT`] printable characters, naming the field otherwise; lines may
/// break (a notice has paragraphs), nothing else invisible may hide in it.
pub fn text(raw: &str, field: &str) -> ApiResult<String> {
    crate::accounts::written_text(raw, field, MAX_TEXT, ErrorCode::InvalidIncident)
}

/// The incident's item, with its count of events (what a change is conditioned on).
fn incident_put(incident: &Incident, condition: Condition) -> ApiResult<Put> {
    let expires = (incident.opened_at + INCIDENT_RECORD_LIFETIME).timestamp();
    let mut item = Item::from_record(schema::incident_pk(&incident.id), sk::INCIDENT, incident, Some(expires))?;
    item.attrs.insert("event_count".into(), json!(incident.events.len()));
    Ok(Put { table: Table::Main, item, condition })
}

/// Opens an incident.
pub async fn open(ports: &Ports, new: NewIncident, by: &str) -> ApiResult<IncidentView> {
    let now = ports.clock().now();
    let detected_at = new.detected_at.unwrap_or(now);
    if detected_at > now {
        return Err(ApiError::invalid(
            ErrorCode::InvalidIncident,
            "detected_at",
            "detected_at cannot be in the future",
        ));
    }
    let incident = Incident {
        id: format!("inc_{}", random_suffix()),
        title: text(&new.title, "title")?,
        summary: text(&new.summary, "summary")?,
        detected_at,
        opened_by: by.to_owned(),
        opened_at: now,
        events: Vec::new(),
    };
    let expires = (now + INCIDENT_RECORD_LIFETIME).timestamp();
    let listed = Item::from_record(
        INCIDENTS_PK,
        schema::time_sort_key("", now),
        &json!({ "incident_id": incident.id }),
        Some(expires),
    )?;
    let ops = vec![
        WriteOp::Put(incident_put(&incident, Condition::NotExists)?),
        WriteOp::Put(Put { table: Table::Main, item: listed, condition: Condition::NotExists }),
    ];
    ports.store().transact(ops).await?;
    tracing::warn!(incident = %incident.id, operator = by, "security incident opened");
    Ok(IncidentView::of(incident))
}

/// One incident, or 404.
pub async fn get<S: ItemStore + ?Sized>(store: &S, id: &str) -> ApiResult<Incident> {
    let not_found = || ApiError::NotFound { code: ErrorCode::IncidentNotFound, message: format!("no incident {id}") };
    let item = store.get(Table::Main, &schema::incident_pk(id), sk::INCIDENT).await?.ok_or_else(not_found)?;
    Ok(item.record()?)
}

/// The newest incidents, at most `limit`, without their timelines (`GET …/{id}` has each one's).
pub async fn list<S: ItemStore + ?Sized>(store: &S, limit: u32) -> ApiResult<Vec<IncidentView>> {
    let page = store.query(Query::new(Table::Main, INCIDENTS_PK).newest_first().limit(limit)).await?;
    let mut views = Vec::with_capacity(page.items.len());
    for entry in &page.items {
        if let Some(id) = entry.attrs.get("incident_id").and_then(|v| v.as_str()) {
            let mut view = IncidentView::of(get(store, id).await?);
            view.incident.events.clear();
            views.push(view);
        }
    }
    Ok(views)
}

/// Adds an event to an incident's timeline (written only over the version read: two at once both land).
pub async fn add_event(ports: &Ports, id: &str, event: Event) -> ApiResult<IncidentView> {
    let store = ports.store();
    for _ in 0..5 {
        let mut incident = get(store, id).await?;
        if incident.events.len() >= MAX_EVENTS {
            let message = format!("an incident records at most {MAX_EVENTS} events; open a new one");
            return Err(ApiError::Conflict { code: ErrorCode::IncidentFull, message, param: None });
        }
        let unchanged = Condition::AttrEquals("event_count".into(), json!(incident.events.len()));
        incident.events.push(event.clone());
        if store.put(incident_put(&incident, unchanged)?).await.applied()?.is_some() {
            return Ok(IncidentView::of(incident));
        }
    }
    Err(ApiError::Unavailable("the incident is being changed by others; try again".into()))
}

/// An operator's event, checked.
pub fn event_from(new: NewEvent, by: &str, now: DateTime<Utc>) -> ApiResult<Event> {
    if new.kind == EventKind::NoticeSent {
        let message = "notice_sent is recorded by sending the notice (POST .../notices)";
        return Err(ApiError::invalid(ErrorCode::InvalidIncident, "kind", message));
    }
    let at = new.at.unwrap_or(now);
    if at > now {
        return Err(ApiError::invalid(ErrorCode::InvalidIncident, "at", "at cannot be in the future"));
    }
    Ok(Event { kind: new.kind, at, recorded_at: now, by: by.to_owned(), note: text(&new.note, "note")? })
}
