//! What each message says, in plain text and HTML built from the same blocks (so the two never disagree).
//! No images, no tracking pixels, no link redirects: every link is the dashboard's own address.

use chrono::{DateTime, FixedOffset, Offset, Utc};

use super::{MailKind, OutboxMail};
use crate::config::Config;
use crate::money::format_inr;

/// A message ready for MIME: subject and both bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The person a message goes to.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub email: String,
    pub full_name: String,
}

enum Block {
    Para(String),
    Link { label: String, url: String },
    Facts(Vec<(&'static str, String)>),
}

fn para(text: impl Into<String>) -> Block {
    Block::Para(text.into())
}

fn link(label: &str, url: String) -> Block {
    Block::Link { label: label.to_owned(), url }
}

/// India Standard Time, the time zone every date in a message is given in.
/// The subject of every security notice (`MailKind::SecurityNotice`).
pub const SECURITY_NOTICE_SUBJECT: &str = "A security incident affected your InferexAI account";

pub fn in_ist(at: DateTime<Utc>) -> String {
    let ist = FixedOffset::east_opt(5 * 3600 + 1800).unwrap_or_else(|| Utc.fix());
    at.with_timezone(&ist).format("%-d %b %Y, %H:%M IST").to_string()
}

fn rupees(units: i64) -> String {
    format!("₹{}", format_inr(units))
}

/// Renders `mail` for `to`. `unsubscribe_url` is set for marketing messages (their footer links it).
pub fn render(mail: &OutboxMail, to: &Recipient, config: &Config, unsubscribe_url: Option<&str>) -> Rendered {
    let (subject, blocks) = content(mail, config);
    let greeting = format!("Hello {},", to.full_name);
    let footer = match unsubscribe_url {
        Some(url) if mail.kind.is_marketing() => vec![
            para("You receive this because you chose to hear about InferexAI's products."),
            link("Unsubscribe with one click", url.to_owned()),
        ],
        _ => vec![para(format!(
            "This is a notice about your InferexAI account, not marketing: you receive it whatever your marketing \
             choice. Questions about your data: {}. Report a security problem: {}.",
            config.privacy_email, config.security_email
        ))],
    };
    let mut all = vec![para(greeting)];
    all.extend(blocks);
    all.push(para("The InferexAI team"));
    let text = text_of(&all, &footer);
    let html = html_of(&subject, &all, &footer);
    Rendered { subject, text, html }
}

/// The receipt of a top-up: what was paid, what the wallet got, the GST, and where the receipt voucher is.
fn payment_receipt(mail: &OutboxMail, config: &Config, when: String) -> (String, Vec<Block>) {
    let credit = mail.number("amount");
    // A receipt of an order without GST carries no `paid` (the payment was the credit).
    let paid = Some(mail.number("paid")).filter(|p| *p > 0).unwrap_or(credit);
    let mut facts = vec![("Amount paid", rupees(paid)), ("Credited to your wallet", rupees(credit))];
    if paid != credit {
        facts.push(("GST on the credit", rupees(paid - credit)));
    }
    facts.extend([
        ("Payment id", mail.text("payment_id")),
        ("Date", when),
        ("Balance after", rupees(mail.number("balance_after"))),
    ]);
    let mut blocks = vec![para("Thank you: your payment was credited to your InferexAI wallet."), Block::Facts(facts)];
    if paid != credit {
        blocks.push(para(
            "Your GST receipt voucher for this payment is under Tax documents in the dashboard, as PDF and JSON.",
        ));
        blocks.push(link("Tax documents", dashboard(config, "/#/wallet")));
    }
    (format!("Payment received: {}", rupees(paid)), blocks)
}

fn dashboard(config: &Config, path_and_query: &str) -> String {
    format!("{}{path_and_query}", config.public_url.trim_end_matches('/'))
}

#[expect(
    clippy::too_many_lines,
    reason = "the table of every message's subject and text, one arm per kind, read as one"
)]
fn content(mail: &OutboxMail, config: &Config) -> (String, Vec<Block>) {
    let when = in_ist(mail.created_at);
    match mail.kind {
        MailKind::VerifyEmail => (
            "Confirm your e-mail address".into(),
            vec![
                para(
                    "Welcome to InferexAI. Please confirm that this address is yours: the link works once, for 24 hours.",
                ),
                link(
                    "Confirm my e-mail address",
                    dashboard(config, &format!("/verify-email?token={}", mail.text("token"))),
                ),
                para(
                    "Until it is confirmed, the account cannot pass KYC, top up its wallet or create API keys. If you did not sign up, ignore this message.",
                ),
            ],
        ),
        MailKind::ConfirmEmailChange => (
            "Confirm your new e-mail address".into(),
            vec![
                para(
                    "You asked to use this address for your InferexAI account. The change takes effect when you confirm it: the link works once, for 24 hours.",
                ),
                link(
                    "Confirm the new address",
                    dashboard(config, &format!("/verify-email?token={}", mail.text("token"))),
                ),
                para("If you did not ask for this, ignore this message: the account keeps its current address."),
            ],
        ),
        MailKind::EmailChanged => (
            "Your account's e-mail address was changed".into(),
            vec![
                para(format!(
                    "On {when} the e-mail address of your InferexAI account changed from {} to {}.",
                    mail.text("old_email"),
                    mail.text("new_email")
                )),
                para(format!("If you did not make this change, write to {} at once.", config.security_email)),
            ],
        ),
        MailKind::PasswordReset => (
            "Reset your password".into(),
            vec![
                para(
                    "Someone (we hope you) asked to reset your InferexAI password. The link works once, for 30 minutes, and signs out every device.",
                ),
                link(
                    "Choose a new password",
                    dashboard(config, &format!("/reset-password?token={}", mail.text("token"))),
                ),
                para("If you did not ask for this, ignore this message: your password stays as it is."),
            ],
        ),
        MailKind::PasswordChanged => (
            "Your password was changed".into(),
            vec![
                para(format!("The password of your InferexAI account was changed on {when} ({}).", mail.text("how"))),
                para(format!("If this was not you, reset your password now and write to {}.", config.security_email)),
                link("Reset my password", dashboard(config, "/reset-password")),
            ],
        ),
        MailKind::SignupAttempt => (
            "Someone tried to sign up with your address".into(),
            vec![
                para(format!(
                    "On {when} someone tried to create an InferexAI account with this e-mail address, which \
                     already has one. No new account was made and nothing about yours changed."
                )),
                para("If it was you, sign in instead, or reset your password if you have forgotten it."),
                link("Reset my password", dashboard(config, "/reset-password")),
                para(format!("If it was not you, you need do nothing; questions go to {}.", config.security_email)),
            ],
        ),
        MailKind::NewSignIn => (
            "New sign-in to your account".into(),
            vec![
                para("Your InferexAI account was signed in to from a device or network it has not used before."),
                Block::Facts(vec![("When", when), ("IP address", mail.text("ip")), ("Device", mail.text("device"))]),
                para(
                    "If this was you, there is nothing to do. If not, reset your password now: that signs out every session.",
                ),
                link("Reset my password", dashboard(config, "/reset-password")),
            ],
        ),
        MailKind::PaymentReceipt => payment_receipt(mail, config, when),
        MailKind::RefundNotice => (
            format!("Refund of {}", rupees(mail.number("amount"))),
            vec![
                para("A refund was made on one of your payments; the amount was taken from your wallet."),
                Block::Facts(vec![
                    ("Amount", rupees(mail.number("amount"))),
                    ("Payment id", mail.text("payment_id")),
                    ("Refund id", mail.text("refund_id")),
                    ("Date", when),
                ]),
            ],
        ),
        MailKind::DisputeNotice => (
            "A dispute on one of your payments".into(),
            vec![
                para(format!(
                    "A dispute raised through your bank on payment {} is {}.",
                    mail.text("payment_id"),
                    mail.text("phase")
                )),
                Block::Facts(vec![
                    ("Amount", rupees(mail.number("amount"))),
                    ("Dispute id", mail.text("dispute_id")),
                    ("Date", when),
                ]),
            ],
        ),
        MailKind::LowBalance => (
            "Your wallet balance is low".into(),
            vec![
                para(format!(
                    "Your InferexAI wallet is down to {}, below your alert threshold of {}. API calls stop when the balance cannot cover them.",
                    rupees(mail.number("balance")),
                    rupees(mail.number("threshold"))
                )),
                para("We tell you once each time the balance drops below the threshold."),
            ],
        ),
        MailKind::SpendLimitAlert => {
            let key = mail.text("key_id");
            let whose = if key.is_empty() { String::new() } else { format!(" (API key {key})") };
            (
                format!("{}% of a spend limit used", mail.number("percent")),
                vec![
                    para(format!(
                        "Spending has reached {}% of {}{whose}: {} of {}.",
                        mail.number("percent"),
                        mail.text("what"),
                        rupees(mail.number("spent")),
                        rupees(mail.number("limit"))
                    )),
                    para(format!(
                        "Calls that would go over the limit are refused until it resets ({}) or you raise it in the dashboard.",
                        mail.text("resets")
                    )),
                ],
            )
        }
        MailKind::KycApproved => (
            "Your KYC is verified".into(),
            vec![para(
                "Your PAN and Aadhaar details were verified. You can now top up your wallet and create API keys.",
            )],
        ),
        MailKind::KycRejected => (
            "Your KYC submission was not accepted".into(),
            vec![
                para(format!("Your KYC submission was rejected for this reason: {}.", mail.text("reason"))),
                para("You can correct your details and submit them again."),
            ],
        ),
        MailKind::ApiKeyCreated => (
            "A new API key was created".into(),
            vec![
                para(format!(
                    "An API key named \"{}\" ({}…) was created on {when}.",
                    mail.text("name"),
                    mail.text("prefix")
                )),
                para("If you did not create it, revoke it now and reset your password."),
                link("Reset my password", dashboard(config, "/reset-password")),
            ],
        ),
        MailKind::PolicyUpdate => (
            "We are updating our terms and privacy policy".into(),
            vec![
                para(format!(
                    "Our terms and privacy policy change with version {}, in effect from {}. The dashboard asks you to review and accept it.",
                    mail.text("version"),
                    mail.text("effective_date")
                )),
                link("What we keep and for how long", dashboard(config, "/v1/privacy")),
            ],
        ),
        MailKind::AccountClosed => {
            let mut body = vec![
                para(format!(
                    "Your InferexAI account was closed on {}. Your API keys and sessions stopped working at once.",
                    mail.text("closed_on")
                )),
                para("What we keep, until when, and the rule that makes us keep it:"),
            ];
            body.extend(mail.lines("retained").into_iter().map(para));
            body.push(para(format!("Everything else is erased. Questions: {}.", config.privacy_email)));
            ("Your account is closed".into(), body)
        }
        MailKind::PrivacyRequestReceived => (
            "We received your privacy request".into(),
            vec![para(format!(
                "We received your {} request ({}) on {when}. We answer within 30 days, by {}.",
                mail.text("request_kind"),
                mail.text("request_id"),
                mail.text("due")
            ))],
        ),
        MailKind::PrivacyRequestCompleted => {
            let mut body = vec![para(format!(
                "Your {} request ({}) is answered: {}.",
                mail.text("request_kind"),
                mail.text("request_id"),
                mail.text("outcome")
            ))];
            if !mail.text("token").is_empty() {
                let url = dashboard(config, &format!("/v1/privacy/export-link?token={}", mail.text("token")));
                body.push(link("Download your data (the link works while the export is kept)", url));
            }
            if !mail.text("next").is_empty() {
                body.push(para(mail.text("next")));
            }
            ("Your privacy request is answered".into(), body)
        }
        MailKind::NomineeChanged => (
            "Your nominee was changed".into(),
            vec![
                para(format!(
                    "On {when} your InferexAI account's nominee, who may exercise your data rights on your death or \
                     incapacity, was {}: {}.",
                    mail.text("change"),
                    mail.text("nominee")
                )),
                para(format!(
                    "If this was not you, sign in, change your password and write to {}.",
                    config.security_email
                )),
            ],
        ),
        MailKind::SecurityNotice => (
            SECURITY_NOTICE_SUBJECT.into(),
            vec![
                para("We are writing about a security incident that affected your InferexAI account."),
                Block::Facts(vec![
                    ("What happened", mail.text("what_happened")),
                    ("When and where", mail.text("when")),
                    ("Your data involved", mail.text("data")),
                    ("What it may mean for you", mail.text("consequences")),
                    ("What we have done", mail.text("measures")),
                    ("What you can do", mail.text("safety")),
                    ("Who to ask", mail.text("contact")),
                ]),
                para(format!(
                    "Incident reference: {}. Security questions: {}.",
                    mail.text("incident"),
                    config.security_email
                )),
            ],
        ),
        MailKind::ProductNews => (mail.text("subject"), vec![para(mail.text("body"))]),
    }
}

fn text_of(blocks: &[Block], footer: &[Block]) -> String {
    let mut out = String::new();
    for block in blocks {
        match block {
            Block::Para(text) => out.push_str(text),
            Block::Link { label, url } => out.push_str(&format!("{label}: {url}")),
            Block::Facts(facts) => {
                let lines: Vec<String> = facts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                out.push_str(&lines.join("\n"));
            }
        }
        out.push_str("\n\n");
    }
    out.push_str("--\n");
    for block in footer {
        if let Block::Para(text) = block {
            out.push_str(text);
        } else if let Block::Link { label, url } = block {
            out.push_str(&format!("{label}: {url}"));
        }
        out.push('\n');
    }
    out
}

/// HTML-escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_block(block: &Block) -> String {
    match block {
        Block::Para(text) => format!("<p>{}</p>", escape(text)),
        Block::Link { label, url } => format!("<p><a href=\"{}\">{}</a></p>", escape(url), escape(label)),
        Block::Facts(facts) => {
            let rows: String = facts
                .iter()
                .map(|(k, v)| format!("<tr><th align=\"left\">{}</th><td>{}</td></tr>", escape(k), escape(v)))
                .collect();
            format!("<table>{rows}</table>")
        }
    }
}

fn html_of(subject: &str, blocks: &[Block], footer: &[Block]) -> String {
    let body: String = blocks.iter().map(html_block).collect();
    let foot: String = footer.iter().map(html_block).collect();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body style=\"font-family:sans-serif;max-width:560px\">{body}<hr><small>{foot}</small></body></html>",
        escape(subject)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|d| d.to_utc()).unwrap_or_default()
    }

    #[test]
    fn dates_are_given_in_india_standard_time() {
        assert_eq!(in_ist(at("2026-11-27T18:45:00Z")), "28 Nov 2026, 00:15 IST");
    }

    #[test]
    fn receipts_name_amount_payment_date_and_balance_and_escape_html() {
        let mail = OutboxMail::new(MailKind::PaymentReceipt, "usr_1", at("2026-11-27T04:30:00Z"))
            .param("amount", 500 * crate::money::UNITS_PER_RUPEE)
            .param("payment_id", "pay_<x>")
            .param("balance_after", 750 * crate::money::UNITS_PER_RUPEE);
        let to = Recipient { email: "a@b.in".into(), full_name: "Asha <b>".into() };
        let rendered = render(&mail, &to, &Config::default(), None);
        assert_eq!(rendered.subject, "Payment received: ₹500.00");
        for fact in ["₹500.00", "pay_<x>", "27 Nov 2026, 10:00 IST", "₹750.00", "not marketing"] {
            assert!(rendered.text.contains(fact), "{fact} in {}", rendered.text);
        }
        assert!(rendered.html.contains("pay_&lt;x&gt;") && rendered.html.contains("Asha &lt;b&gt;"));
        assert!(!rendered.html.contains("<img"), "no tracking pixels");
    }

    #[test]
    fn only_marketing_carries_an_unsubscribe_link() {
        let news = OutboxMail::new(MailKind::ProductNews, "usr_1", Utc::now())
            .param("subject", "New models")
            .param("body", "Hi");
        let to = Recipient { email: "a@b.in".into(), full_name: "A".into() };
        let rendered = render(&news, &to, &Config::default(), Some("https://x/u?token=t"));
        assert!(rendered.text.contains("Unsubscribe with one click: https://x/u?token=t"));
        let receipt = OutboxMail::new(MailKind::KycApproved, "usr_1", Utc::now());
        assert!(!render(&receipt, &to, &Config::default(), Some("https://x/u")).text.contains("Unsubscribe"));
    }
}
