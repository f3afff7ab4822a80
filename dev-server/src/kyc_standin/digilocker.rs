//! The stand-in's DigiLocker API: a session created with a consent link, its status, and the Aadhaar
//! document once the customer shared it (only the last four digits of a number ever leave the stand-in).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{KycStandIn, LINK_LIFETIME, Session, SessionStatus, error};

#[derive(Deserialize)]
pub(super) struct DigilockerBody {
    verification_id: Option<String>,
    document_requested: Option<Vec<String>>,
    redirect_url: Option<String>,
}

pub(super) async fn create(
    State(s): State<KycStandIn>,
    headers: HeaderMap,
    Json(body): Json<DigilockerBody>,
) -> Response {
    if let Err(refused) = s.admit(&headers, "digilocker").await {
        return refused.into_response();
    }
    let id = body.verification_id.unwrap_or_default();
    if body.document_requested.as_ref().is_none_or(Vec::is_empty) {
        return error(
            StatusCode::BAD_REQUEST,
            "validation_error",
            "document_requested_missing",
            "document_requested is missing in the request.",
        );
    }
    if let Err(refused) = s.fresh_id(&id) {
        return refused.into_response();
    }
    let subject = id.rsplit_once('-').map_or(id.as_str(), |(subject, _)| subject).to_owned();
    let reference_id = s.reference();
    let redirect_url = body.redirect_url.unwrap_or_default();
    let session = Session {
        reference_id,
        redirect_url: redirect_url.clone(),
        created: s.clock.now(),
        status: SessionStatus::Pending,
        shared: None,
        defaults: s.books().pan_checks.get(&subject).cloned(),
    };
    s.books().sessions.insert(id.clone(), session);
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1:8080");
    let prefix = &s.mount;
    Json(json!({
        "verification_id": id, "reference_id": reference_id, "url": format!("http://{host}{prefix}/dgl/{id}"),
        "status": SessionStatus::Pending, "user_flow": "signup", "document_requested": ["AADHAAR"], "redirect_url": redirect_url,
    }))
    .into_response()
}

#[derive(Deserialize)]
pub(super) struct IdQuery {
    verification_id: Option<String>,
}

impl KycStandIn {
    /// The session, its status brought up to date (a pending link expires after 10 minutes).
    pub(super) fn session(&self, id: &str) -> Option<Session> {
        let now = self.clock.now();
        let mut books = self.books();
        let session = books.sessions.get_mut(id)?;
        if session.status == SessionStatus::Pending && now - session.created > LINK_LIFETIME {
            session.status = SessionStatus::Expired;
        }
        Some(session.clone())
    }
}

fn no_session() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "verification_id_value_invalid",
        "Please enter a valid verification_id",
    )
}

pub(super) async fn status(State(s): State<KycStandIn>, headers: HeaderMap, Query(q): Query<IdQuery>) -> Response {
    if let Err(refused) = s.admit(&headers, "digilocker-status").await {
        return refused.into_response();
    }
    let id = q.verification_id.unwrap_or_default();
    let Some(session) = s.session(&id) else { return no_session() };
    let details = session.shared.as_ref().map_or(json!({}), |d| {
        json!({"name": d.name, "dob": d.date_of_birth.format("%d-%m-%Y").to_string(), "gender": "F", "eaadhaar": "Y"})
    });
    let consented = if session.shared.is_some() { json!(["AADHAAR"]) } else { json!([]) };
    Json(json!({
        "user_details": details, "status": session.status, "document_requested": ["AADHAAR"],
        "document_consent": consented, "verification_id": id, "reference_id": session.reference_id,
    }))
    .into_response()
}

pub(super) async fn document(
    State(s): State<KycStandIn>,
    headers: HeaderMap,
    Path(document): Path<String>,
    Query(q): Query<IdQuery>,
) -> Response {
    if let Err(refused) = s.admit(&headers, "digilocker-document").await {
        return refused.into_response();
    }
    let id = q.verification_id.unwrap_or_default();
    let Some(session) = s.session(&id) else { return no_session() };
    let Some(shared) = session.shared.filter(|_| document == "AADHAAR") else {
        return error(
            StatusCode::BAD_REQUEST,
            "validation_error",
            "consent_not_granted",
            "User has not granted consent for the document",
        );
    };
    Json(json!({
        "reference_id": session.reference_id, "verification_id": id, "status": "SUCCESS",
        "uid": format!("xxxxxxxx{}", shared.last_four), "name": shared.name,
        "dob": shared.date_of_birth.format("%d-%m-%Y").to_string(), "gender": "F", "care_of": "D/O: Stand-in Parent",
        "photo_link": "", "split_address": {"country": "India", "dist": "Bengaluru Urban", "house": "1", "landmark": "",
        "pincode": "560001", "po": "Bengaluru GPO", "state": "Karnataka", "street": "MG Road", "subdist": "Bengaluru", "vtc": "Bengaluru"},
        "xml_file": "", "message": "Aadhaar Card Exists",
    }))
    .into_response()
}
