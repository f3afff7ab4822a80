//! The stand-in's DigiLocker consent page: one HTML form whose default submission shares an Aadhaar with the
//! name and date of birth of the submission's PAN check (a synthetic number, of which only the last four
//! digits ever leave the stand-in), and a button that declines. Either way the browser goes back to the
//! `redirect_url` given when the session was created, as DigiLocker sends it back.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use serde::Deserialize;

use super::{KycStandIn, SessionStatus, Shared};

/// A synthetic Aadhaar number with a valid check digit (not anyone's).
const DEFAULT_AADHAAR: &str = "234123412346";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub(super) async fn page(State(s): State<KycStandIn>, Path(id): Path<String>) -> Response {
    let Some(session) = s.session(&id) else {
        return (StatusCode::NOT_FOUND, "no such DigiLocker session").into_response();
    };
    if session.status != SessionStatus::Pending {
        return (StatusCode::GONE, format!("this DigiLocker link is {}", session.status.word())).into_response();
    }
    let (name, born) =
        session.defaults.map_or((String::new(), String::new()), |(n, d)| (n, d.format("%Y-%m-%d").to_string()));
    let id = escape(&id);
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>DigiLocker (local stand-in)</title></head>
<body><main><h1>DigiLocker: share your Aadhaar</h1>
<p>Local stand-in for DigiLocker through the KYC provider. InferexAI will receive your name, date of birth and the last four digits of your Aadhaar number.</p>
<form method="post" action="{id}" id="consent">
<label>Name as in Aadhaar <input name="name" value="{name}" required></label>
<label>Date of birth <input name="dob" type="date" value="{born}" required></label>
<label>Aadhaar number <input name="aadhaar" value="{DEFAULT_AADHAAR}" inputmode="numeric" required></label>
<button type="submit" name="decision" value="allow">Allow</button>
<button type="submit" name="decision" value="deny" formnovalidate>Deny</button>
</form></main></body></html>"#,
        name = escape(&name),
        born = escape(&born),
    ))
    .into_response()
}

#[derive(Deserialize)]
pub(super) struct ConsentForm {
    decision: Option<String>,
    name: Option<String>,
    dob: Option<String>,
    aadhaar: Option<String>,
}

pub(super) async fn submit(State(s): State<KycStandIn>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<ConsentForm>(&body) else {
        return (StatusCode::BAD_REQUEST, "a form is expected").into_response();
    };
    let Some(session) = s.session(&id) else {
        return (StatusCode::NOT_FOUND, "no such DigiLocker session").into_response();
    };
    if session.status != SessionStatus::Pending {
        return (StatusCode::GONE, format!("this DigiLocker link is {}", session.status.word())).into_response();
    }
    let shared = if form.decision.as_deref() == Some("deny") {
        None
    } else {
        let aadhaar = form.aadhaar.unwrap_or_default().replace([' ', '-'], "");
        let born = form.dob.as_deref().and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        let name = form.name.unwrap_or_default().trim().to_owned();
        let (Some(born), false) = (born, name.is_empty()) else {
            return (StatusCode::BAD_REQUEST, "name and date of birth are required").into_response();
        };
        if !shared::kyc::documents::looks_like_aadhaar(&aadhaar) {
            return (StatusCode::BAD_REQUEST, "that is not an Aadhaar number").into_response();
        }
        Some(Shared { name, date_of_birth: born, last_four: aadhaar[8..].to_owned() })
    };
    {
        let mut books = s.books();
        if let Some(stored) = books.sessions.get_mut(&id) {
            stored.status = if shared.is_some() { SessionStatus::Authenticated } else { SessionStatus::ConsentDenied };
            stored.shared = shared;
        }
    }
    Redirect::to(&session.redirect_url).into_response()
}

/// What a browser does on the consent page at `url` when the customer presses Allow (or Deny) without
/// changing a field: reads the form's defaults and submits them. Returns where the stand-in sends the
/// browser back (the `redirect_url` of the session). For the tests, the fleet's checks and the benchmarks.
pub async fn submit_defaults(
    http: &reqwest::Client,
    url: &str,
    allow: bool,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let page = http.get(url).send().await?.error_for_status()?.text().await?;
    let mut fields: Vec<(String, String)> = ["name", "dob", "aadhaar"]
        .iter()
        .map(|field| (field.to_string(), input_value(&page, field).unwrap_or_default()))
        .collect();
    fields.push(("decision".into(), if allow { "allow" } else { "deny" }.into()));
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let answer = no_redirects.post(url).form(&fields).send().await?;
    let location = answer.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    location
        .ok_or_else(|| format!("the consent page answered {} without sending the browser back", answer.status()).into())
}

/// The `value` of the form's input named `name` (HTML-unescaped).
fn input_value(page: &str, name: &str) -> Option<String> {
    let start = page.find(&format!("name=\"{name}\""))?;
    let rest = &page[start..];
    let value = rest.split("value=\"").nth(1)?.split('"').next()?;
    Some(value.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
}
