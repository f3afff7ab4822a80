//! The raw message (RFC 5322 with MIME): what SES sends as `Raw` content and what `make run` writes to an
//! `.eml` file, byte for byte the same. Raw content is what lets a marketing message carry RFC 8058's
//! one-click unsubscribe headers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};

use super::messages::Rendered;

/// Headers a message carries beside its content.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub message_id: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub date: DateTime<Utc>,
    /// `List-Unsubscribe` target of a marketing message (with `List-Unsubscribe-Post: List-Unsubscribe=One-Click`).
    pub unsubscribe_url: Option<&'a str>,
    /// `X-Inferex-Kind`, for filtering and for the local mailbox's listing.
    pub kind: &'a str,
}

/// A header value with no line breaks, so no value can start a header of its own.
fn one_line(value: &str) -> String {
    value.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

/// RFC 2047 encoded-word for any non-ASCII header text (the ₹ sign in subjects).
fn encoded_word(text: &str) -> String {
    let text = one_line(text);
    if text.is_ascii() { text } else { format!("=?UTF-8?B?{}?=", STANDARD.encode(text.as_bytes())) }
}

/// Base64 body lines of at most 76 characters (RFC 2045).
fn base64_lines(body: &str) -> String {
    let encoded = STANDARD.encode(body.as_bytes());
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 38);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out
}

/// The whole message: headers, then a `multipart/alternative` body with the text and the HTML.
pub fn build(envelope: &Envelope<'_>, content: &Rendered) -> Vec<u8> {
    let boundary = format!("=_inferex_{}", one_line(envelope.message_id));
    let mut headers = vec![
        format!("From: {}", one_line(envelope.from)),
        format!("To: {}", one_line(envelope.to)),
        format!("Subject: {}", encoded_word(&content.subject)),
        format!("Date: {}", envelope.date.to_rfc2822()),
        format!("Message-ID: <{}@inferexai.in>", one_line(envelope.message_id)),
        "MIME-Version: 1.0".to_owned(),
        format!("X-Inferex-Kind: {}", one_line(envelope.kind)),
    ];
    match envelope.unsubscribe_url {
        Some(url) => {
            headers.push(format!("List-Unsubscribe: <{}>", one_line(url)));
            headers.push("List-Unsubscribe-Post: List-Unsubscribe=One-Click".to_owned());
        }
        // Account notices: automatic replies should not answer them (RFC 3834).
        None => headers.push("Auto-Submitted: auto-generated".to_owned()),
    }
    headers.push(format!("Content-Type: multipart/alternative; boundary=\"{boundary}\""));
    let mut out = headers.join("\r\n");
    out.push_str("\r\n\r\n");
    for (kind, body) in [("text/plain", &content.text), ("text/html", &content.html)] {
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: {kind}; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        ));
        out.push_str(&base64_lines(body));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out.into_bytes()
}

/// Reads a part of a message built by [`build`] back: the decoded body of its `text/plain` or `text/html`
/// part (the local mailbox and the tests read messages this way).
pub fn part(raw: &[u8], content_type: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let marker = format!("Content-Type: {content_type}; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    let start = text.find(&marker)? + marker.len();
    let rest = &text[start..];
    let end = rest.find("--").unwrap_or(rest.len());
    let joined: String = rest[..end].split_whitespace().collect();
    String::from_utf8(STANDARD.decode(joined).ok()?).ok()
}

/// A header's value from a message built by [`build`] (encoded words decoded).
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next()?;
    let prefix = format!("{name}: ");
    let value = head.split("\r\n").find_map(|line| line.strip_prefix(&prefix))?;
    match value.strip_prefix("=?UTF-8?B?").and_then(|v| v.strip_suffix("?=")) {
        Some(encoded) => String::from_utf8(STANDARD.decode(encoded).ok()?).ok(),
        None => Some(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> Rendered {
        Rendered {
            subject: "Payment received: ₹500.00".into(), text: "Hello\nworld ₹".into(), html: "<p>x</p>".into()
        }
    }

    #[test]
    fn a_message_round_trips_and_headers_cannot_be_injected() {
        let envelope = Envelope {
            message_id: "msg_1",
            from: "InferexAI <no-reply@inferexai.in>",
            to: "a@b.in\r\nBcc: evil@x.in",
            date: Utc::now(),
            unsubscribe_url: None,
            kind: "payment_receipt",
        };
        let raw = build(&envelope, &content());
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains("\r\nBcc:"), "{text}");
        assert_eq!(header(&raw, "Subject").as_deref(), Some("Payment received: ₹500.00"));
        assert_eq!(header(&raw, "Auto-Submitted").as_deref(), Some("auto-generated"));
        assert_eq!(header(&raw, "List-Unsubscribe"), None);
        assert_eq!(part(&raw, "text/plain").as_deref(), Some("Hello\nworld ₹"));
        assert_eq!(part(&raw, "text/html").as_deref(), Some("<p>x</p>"));
        assert!(text.lines().all(|l| l.len() <= 998), "RFC 5322 line length");
    }

    #[test]
    fn marketing_carries_one_click_unsubscribe() {
        let envelope = Envelope {
            message_id: "msg_2",
            from: "f@inferexai.in",
            to: "a@b.in",
            date: Utc::now(),
            unsubscribe_url: Some("https://api.inferexai.in/v1/unsubscribe?token=t"),
            kind: "product_news",
        };
        let raw = build(&envelope, &content());
        assert_eq!(
            header(&raw, "List-Unsubscribe").as_deref(),
            Some("<https://api.inferexai.in/v1/unsubscribe?token=t>")
        );
        assert_eq!(header(&raw, "List-Unsubscribe-Post").as_deref(), Some("List-Unsubscribe=One-Click"));
    }
}
