//! The local mailbox as tests read it: a message's headers, text and links.

use shared::notifications::mime;

/// A message from the local mailbox.
#[derive(Debug, Clone)]
pub struct Mail {
    /// `X-Inferex-Kind`: `verify_email`, `payment_receipt`, ...
    pub kind: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub raw: Vec<u8>,
}

impl Mail {
    pub fn parse(raw: Vec<u8>) -> Self {
        Self {
            kind: mime::header(&raw, "X-Inferex-Kind").unwrap_or_default(),
            subject: mime::header(&raw, "Subject").unwrap_or_default(),
            text: mime::part(&raw, "text/plain").unwrap_or_default(),
            html: mime::part(&raw, "text/html").unwrap_or_default(),
            raw,
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        mime::header(&self.raw, name)
    }

    /// The `token` of the first link in the text.
    pub fn link_token(&self) -> Option<String> {
        let start = self.text.find("token=")? + "token=".len();
        Some(self.text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect())
    }
}
