//! Retention in one place: every class of item the system writes, how long it is kept, and the windows in
//! force (the published policy's values, overridable by configuration).
//!
//! Every module that writes an item takes its `expires_at` from here ([`Retention::expiry`]), and
//! [`ItemClass::of`] names the class of any stored item by its key, so a test can check that everything
//! the real flows write carries the right expiry, and that nothing unnamed is written at all.

use chrono::{DateTime, Duration, Months, Utc};
use serde::Serialize;

use crate::env::{ConfigError, var};

/// How long each class of data is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// `INFEREX_USAGE_RETENTION_MONTHS`: usage logs, from the call (default 12).
    pub usage_months: u32,
    /// `INFEREX_KYC_RETENTION_YEARS`: KYC records and vault entries, from account closure (default 5).
    pub kyc_years_after_closure: u32,
    /// `INFEREX_PAYMENT_RETENTION_YEARS`: tax documents, top-ups, payments, refunds, ledger, webhook archive:
    /// whole financial years (April to March, IST) after the one they belong to (default 8: CGST Act s.36
    /// keeps accounts 72 months from the annual return's due date, the Companies Act s.128(5) eight years).
    pub payment_years: u32,
    /// `INFEREX_ACCOUNT_RETENTION_YEARS`: the account and its consent records, from closure (default 3).
    pub account_years_after_closure: u32,
    /// `INFEREX_LOGIN_RECORD_RETENTION_DAYS`: login records (IP, user agent), from the attempt (default 180).
    pub login_record_days: u32,
    /// `INFEREX_PRIVACY_REQUEST_RETENTION_YEARS`: the record of each access, correction or erasure request,
    /// from its receipt (default 3, the account window, so the evidence outlives a closure it records).
    pub privacy_request_years: u32,
    /// `INFEREX_EXPORT_RETENTION_DAYS`: data exports (the file and its record), from creation (default 7).
    pub export_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            usage_months: 12,
            kyc_years_after_closure: 5,
            payment_years: 8,
            account_years_after_closure: 3,
            login_record_days: 180,
            privacy_request_years: 3,
            export_days: 7,
        }
    }
}

fn positive(name: &str, default: u32) -> Result<u32, ConfigError> {
    match var::<u32>(name)? {
        Some(0) => Err(ConfigError { name: name.to_owned(), reason: "must be at least 1".into() }),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

impl Retention {
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            usage_months: positive("INFEREX_USAGE_RETENTION_MONTHS", d.usage_months)?,
            kyc_years_after_closure: positive("INFEREX_KYC_RETENTION_YEARS", d.kyc_years_after_closure)?,
            payment_years: positive("INFEREX_PAYMENT_RETENTION_YEARS", d.payment_years)?,
            account_years_after_closure: positive("INFEREX_ACCOUNT_RETENTION_YEARS", d.account_years_after_closure)?,
            login_record_days: positive("INFEREX_LOGIN_RECORD_RETENTION_DAYS", d.login_record_days)?,
            privacy_request_years: positive("INFEREX_PRIVACY_REQUEST_RETENTION_YEARS", d.privacy_request_years)?,
            export_days: positive("INFEREX_EXPORT_RETENTION_DAYS", d.export_days)?,
        })
    }

    /// The window of a class, or `None` for classes whose lifetime is set another way (see [`Rule`]).
    pub fn window(&self, class: ItemClass) -> Option<Window> {
        match class.rule() {
            Rule::FromWrite(window) | Rule::FromClosure(window) => Some(self.resolve(window)),
            Rule::Session
            | Rule::LoginThrottle
            | Rule::SubmissionWindow
            | Rule::KeyExpiry
            | Rule::ErasedAtClosure
            | Rule::Lifetime(_)
            | Rule::RateWindow
            | Rule::SpendWindow => None,
        }
    }

    fn resolve(&self, window: Span) -> Window {
        match window {
            Span::Usage => Window::Months(self.usage_months),
            Span::Kyc => Window::Months(self.kyc_years_after_closure.saturating_mul(12)),
            Span::Payments => Window::FinancialYears(self.payment_years),
            Span::Account => Window::Months(self.account_years_after_closure.saturating_mul(12)),
            Span::LoginRecords => Window::Days(self.login_record_days),
            Span::PrivacyRequests => Window::Months(self.privacy_request_years.saturating_mul(12)),
            Span::Exports => Window::Days(self.export_days),
        }
    }

    /// The end (epoch seconds) of a window that starts at `from`.
    pub fn until(&self, span: Span, from: DateTime<Utc>) -> i64 {
        self.resolve(span).after(from)
    }

    /// `expires_at` (epoch seconds) for an item of `class` whose window starts at `from` (the write for
    /// most classes, the closure for the account and KYC). `None` for classes without a fixed window.
    pub fn expiry(&self, class: ItemClass, from: DateTime<Utc>) -> Option<i64> {
        self.window(class).map(|w| w.after(from))
    }

    /// The windows as the privacy endpoint publishes them.
    pub fn published(&self, session_ttl: Duration, login_window: Duration) -> Vec<PublishedWindow> {
        let r = |span| describe(self.resolve(span));
        vec![
            PublishedWindow::new(
                "account",
                "email, name, date of birth, consent records",
                format!("while the account is open, then {} after closure", r(Span::Account)),
            ),
            PublishedWindow::new(
                "kyc",
                "PAN (encrypted), name on PAN, GSTIN and legal name, the KYC provider's answers, the last four digits of the Aadhaar and DigiLocker's reference (never the Aadhaar number), consent records of each check, verification decisions",
                format!("{} after account closure", r(Span::Kyc)),
            ),
            billing_window(),
            PublishedWindow::new(
                "payments",
                "tax documents (receipt vouchers, tax invoices, refund vouchers), top-ups, Razorpay payments and refunds, wallet ledger, raw webhook payloads",
                r(Span::Payments),
            ),
            PublishedWindow::new(
                "usage_logs",
                "model, token counts, latency, cost, time and key id of each API call; never prompts or completions",
                r(Span::Usage),
            ),
            PublishedWindow::new(
                "login_records",
                "IP address and user agent of every login attempt",
                r(Span::LoginRecords),
            ),
            PublishedWindow::new(
                "sessions",
                "dashboard session tokens (stored only as digests)",
                format!(
                    "until logout, account closure or {} after login",
                    plural(session_ttl.num_days().max(0) as u32, "day")
                ),
            ),
            PublishedWindow::new(
                "login_throttling",
                "markers of failed login attempts",
                format!("{} minutes", login_window.num_minutes()),
            ),
            PublishedWindow::new(
                "api_keys",
                "key names, prefixes and digests",
                "until revoked, expired or the account is closed".into(),
            ),
            PublishedWindow::new(
                "privacy_requests",
                "each access, correction and erasure request and its outcome",
                r(Span::PrivacyRequests),
            ),
            PublishedWindow::new("data_exports", "the files produced by data export requests", r(Span::Exports)),
            request_logs_window(),
            PublishedWindow::new(
                "mail_suppression",
                "an address that bounced or marked our mail as spam, and when",
                "1 year from the bounce or complaint".into(),
            ),
        ]
    }
}

/// The service's request logs (each function's access lines, `log_access` in the http module, and API
/// Gateway's access log): CloudWatch keeps them `LogRetentionDays` (template.yaml, 365 unless raised) in
/// ap-south-1, for the DPDP Rules' year of logs (rule 6(1)(e)); not items in the store, so no TTL of ours.
fn request_logs_window() -> PublishedWindow {
    let data = "IP address, method, route, status, latency and time of each request to the API; never bodies, \
                credentials, prompts or completions";
    PublishedWindow::new("request_logs", data, "1 year".into())
}

/// The billing profile's window: it lives with the account (tax documents keep their own copy).
fn billing_window() -> PublishedWindow {
    let data = "billing name, address, state, PIN code and a business's verified GSTIN";
    PublishedWindow::new("billing_profile", data, "while the account is open; erased at closure".into())
}

/// A window as the policy says it: "12 months"; whole multiples of a year from two years up in years.
fn describe(window: Window) -> String {
    match window {
        Window::Months(m) if m % 12 == 0 && m >= 24 => plural(m / 12, "year"),
        Window::Months(m) => plural(m, "month"),
        Window::FinancialYears(y) => {
            format!("{} after the financial year (April to March) they belong to", plural(y, "financial year"))
        }
        Window::Days(d) => plural(d, "day"),
    }
}

fn plural(n: u32, unit: &str) -> String {
    if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") }
}

/// A retention window: calendar months (so "3 years" ends on the same date), days, or whole financial years
/// after the one the item belongs to (tax records: kept to the end of March of the last year).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Months(u32),
    Days(u32),
    FinancialYears(u32),
}

impl Window {
    pub fn after(self, from: DateTime<Utc>) -> i64 {
        match self {
            Window::Months(m) => from.checked_add_months(Months::new(m)),
            Window::Days(d) => from.checked_add_signed(Duration::days(i64::from(d))),
            Window::FinancialYears(y) => Some(crate::clock::FinancialYear::of(from).after(y)),
        }
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
        .timestamp()
    }
}

/// Which configured window a rule uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Usage,
    Kyc,
    Payments,
    Account,
    LoginRecords,
    PrivacyRequests,
    Exports,
}

/// How an item's lifetime is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `expires_at` = the write + the window.
    FromWrite(Span),
    /// No expiry while the account is open; closure + the window once it closes.
    FromClosure(Span),
    /// Ends with the session (`INFEREX_SESSION_TTL_SECONDS` after login), or earlier at logout/closure.
    Session,
    /// Ends when it leaves the login throttling window.
    LoginThrottle,
    /// Ends with the account's KYC submission window (`shared::kyc::SUBMISSION_WINDOW_DAYS` after its first
    /// submission).
    SubmissionWindow,
    /// Lives as long as its API key: the key's own `expires_at`, if any; deleted when revoked.
    KeyExpiry,
    /// No expiry while the account is open; deleted when it closes (nothing requires keeping it).
    ErasedAtClosure,
    /// A working item with a fixed lifetime from its write (a link's token, a message waiting to be sent,
    /// a delivery's idempotency record); most are deleted sooner, when used.
    Lifetime(Duration),
    /// Ends with its counted rate window (password resets, verification e-mails).
    RateWindow,
    /// Ends [`SPEND_WINDOW_GRACE`] after its spend window (a day or a month in IST) ends: by then no call
    /// admitted in it is still settling.
    SpendWindow,
}

/// How long an e-mail verification link works.
pub const EMAIL_TOKEN_LIFETIME: Duration = Duration::hours(24);
/// How long a password-reset link works.
pub const RESET_TOKEN_LIFETIME: Duration = Duration::minutes(30);
/// A message not sent within this long is dropped (the sender retries for hours; failures go to the DLQ).
pub const OUTBOX_LIFETIME: Duration = Duration::days(14);
/// A delivery's idempotency record outlives every redelivery of its stream record (kept 24 hours by DynamoDB
/// Streams) many times over.
pub const DELIVERY_RECORD_LIFETIME: Duration = Duration::days(30);
/// An address that bounced or complained gets no mail for a year.
pub const SUPPRESSION_LIFETIME: Duration = Duration::days(365);
/// A marketing message's unsubscribe link works for a year.
pub const UNSUBSCRIBE_LIFETIME: Duration = Duration::days(365);
/// How long the record of a one-time data migration (the Aadhaar erasure) is kept: as long as KYC data.
pub const MIGRATION_RECORD_LIFETIME: Duration = Duration::days(5 * 365);
/// How long a pending KYC submission stays in the operators' queue at most.
pub const KYC_QUEUE_LIFETIME: Duration = Duration::days(365);
/// The record that an account got a policy notice or a campaign, so a rerun never sends it twice.
pub const NOTICE_LIFETIME: Duration = Duration::days(400);
/// The sweeper's saved place: rewritten by every run that meets its budget.
pub const SWEEP_CURSOR_LIFETIME: Duration = Duration::days(30);
/// A spend window is kept this long after it ends (its calls settle within minutes; the usage log keeps the
/// detail).
pub const SPEND_WINDOW_GRACE: Duration = Duration::days(2);
/// A running call's slot outlives any call (the inference function's 300 s timeout) by a margin.
pub const IN_FLIGHT_SLOT_LIFETIME: Duration = Duration::seconds(330);
/// A spend limit's alert stays listed this long.
pub const SPEND_ALERT_LIFETIME: Duration = Duration::days(90);
/// A month's tax invoice run keeps its place this long (it is done within days).
pub const TAX_INVOICE_RUN_LIFETIME: Duration = Duration::days(400);
/// A running call's sign of life (`wallet::heartbeats`).
pub const CALL_BEAT_LIFETIME: Duration = Duration::days(1);
/// An operator session's longest life (`operators::sessions`; idle, it ends after 8 hours).
pub const OPERATOR_SESSION_LIFETIME: Duration = Duration::hours(12);
/// A security incident's record is kept this long after it was opened (three years).
pub const INCIDENT_RECORD_LIFETIME: Duration = Duration::days(3 * 365);
/// An operator's enrolled authenticator lapses this long after their last sign-in.
pub const OPERATOR_ENROLMENT_LIFETIME: Duration = Duration::days(400);

mod classes;
pub use classes::ItemClass;
pub mod holds;
pub use holds::{AfterClosure, HOLDS, Hold};

/// One row of `GET /v1/privacy`'s retention table.
#[derive(Debug, Clone, Serialize)]
pub struct PublishedWindow {
    pub data: &'static str,
    pub what: &'static str,
    pub kept: String,
    /// Why it outlives a closed account (the rule, [`HOLDS`]); `None`: erased at closure or sooner.
    pub after_closure: Option<&'static str>,
}

impl PublishedWindow {
    fn new(data: &'static str, what: &'static str, kept: String) -> Self {
        let after_closure = HOLDS.iter().find(|hold| hold.data == data).map(|hold| hold.reason);
        Self { data, what, kept, after_closure }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|d| d.to_utc()).unwrap_or_default()
    }

    #[test]
    fn windows_follow_the_policy_calendar() {
        let r = Retention::default();
        let t = at("2026-11-27T10:00:00Z");
        assert_eq!(r.expiry(ItemClass::UsageLog, t), Some(at("2027-11-27T10:00:00Z").timestamp()));
        // Financial year 2026-27 (IST), then eight more: kept until 1 April 2035, 00:00 IST.
        assert_eq!(r.expiry(ItemClass::LedgerEntry, t), Some(at("2035-03-31T18:30:00Z").timestamp()));
        // 31 March 23:59 IST is still 2025-26; a minute later is 2026-27.
        assert_eq!(
            r.expiry(ItemClass::LedgerEntry, at("2026-03-31T18:29:00Z")),
            Some(at("2034-03-31T18:30:00Z").timestamp())
        );
        assert_eq!(
            r.expiry(ItemClass::TaxDocument, at("2026-03-31T18:30:00Z")),
            Some(at("2035-03-31T18:30:00Z").timestamp())
        );
        assert_eq!(r.expiry(ItemClass::KycRecord, t), Some(at("2031-11-27T10:00:00Z").timestamp()));
        assert_eq!(r.expiry(ItemClass::Account, t), Some(at("2029-11-27T10:00:00Z").timestamp()));
        assert_eq!(r.expiry(ItemClass::LoginRecord, t), Some((t + Duration::days(180)).timestamp()));
        assert_eq!(r.expiry(ItemClass::DataExport, t), Some((t + Duration::days(7)).timestamp()));
        assert_eq!(r.expiry(ItemClass::Session, t), None);
        // A leap day plus whole years lands on 28 February, never in March.
        let leap = at("2028-02-29T00:00:00Z");
        assert_eq!(r.expiry(ItemClass::Account, leap), Some(at("2031-02-28T00:00:00Z").timestamp()));
    }

    #[test]
    fn configuration_overrides_the_windows() {
        let r = Retention { usage_months: 6, ..Retention::default() };
        let t = at("2026-01-31T00:00:00Z");
        assert_eq!(r.expiry(ItemClass::UsageLog, t), Some(at("2026-07-31T00:00:00Z").timestamp()));
    }

    #[test]
    fn every_written_key_shape_has_a_class() {
        let cases = [
            ("USER#usr_1", "PROFILE", ItemClass::Account),
            ("USER#usr_1", "CONSENT#0001#ab", ItemClass::Consent),
            ("USER#usr_1", "LOGIN#0001#ab", ItemClass::LoginRecord),
            ("USER#usr_1", "USAGE#0001#ab", ItemClass::UsageLog),
            ("USER#usr_1", "APIKEYSLOT#03", ItemClass::ApiKeySlot),
            ("LOGIN#a@b.in", "0001#ab", ItemClass::LoginRecord),
            ("TOPUPS#OPEN", "0001#top_1", ItemClass::OpenTopup),
            ("WALLETS", "usr_1", ItemClass::WalletRegistry),
            ("VAULT#ref", "SECRET", ItemClass::KycVault),
            ("OUTBOX", "0001#ab", ItemClass::Outbox),
            ("RATE#password-reset#a@b.in", "WINDOW", ItemClass::RateLimit),
            ("NOTICE#policy-2027-01-01", "usr_1", ItemClass::NoticeSent),
            ("TAXDOC#rv_pay_1", "DOCUMENT", ItemClass::TaxDocument),
            ("USER#usr_1", "TAXDOC#0001#ab", ItemClass::TaxDocumentIndex),
            ("TAXSERIES#RV#2026", "COUNTER", ItemClass::TaxSeries),
            ("TAXDOCS#UNNUMBERED", "0001#rv_pay_1", ItemClass::UnnumberedDocument),
            ("TAXDOCS#DUE", "rv_pay_1", ItemClass::ReceiptDue),
            ("USER#usr_1", "ADVANCES", ItemClass::AdvanceBalance),
            ("USER#usr_1", "NOMINEE", ItemClass::Nominee),
            ("TAXINVOICES#2026-11", "CURSOR", ItemClass::TaxInvoiceRun),
            ("TAXINVOICES#2026-11", "TALLY#usr_1", ItemClass::TaxInvoiceRun),
            ("TAXINVOICES#2026-11", "HELD#usr_1", ItemClass::TaxInvoiceRun),
            ("TAXDOCS#MONTH#2026-11", "0001#rv_pay_1", ItemClass::IssuedDocumentIndex),
            ("OPERATOR#ravi@inferexai.in", "TOTP", ItemClass::OperatorTotp),
            ("OPERATOR#ravi@inferexai.in", "SIGNIN#0001#ab", ItemClass::OperatorSignIn),
            ("OPSESSION#9f2c", "SESSION", ItemClass::OperatorSession),
            ("INCIDENT#inc_1", "INCIDENT", ItemClass::Incident),
            ("INCIDENTS", "0001#ab", ItemClass::Incident),
            ("NOTICE#security-inc_1-n1", "usr_1", ItemClass::NoticeSent),
            ("RATE#operator-sign-in#ravi@inferexai.in", "WINDOW", ItemClass::RateLimit),
            ("RATE#kyc-reveal#ravi@inferexai.in", "WINDOW", ItemClass::RateLimit),
            ("PRIVACYREQS#OPEN", "prq_1", ItemClass::OpenPrivacyRequest),
            ("CLOSEDEMAIL#a@b.in", "usr_1", ItemClass::ClosedAccountEmail),
            ("EXPORTTOKEN#9f2c", "TOKEN", ItemClass::ExportToken),
        ];
        for (pk, sk, class) in cases {
            assert_eq!(ItemClass::of(pk, sk), Some(class), "{pk} {sk}");
        }
        assert_eq!(ItemClass::of("USER#usr_1", "SOMETHING#1"), None);
        assert_eq!(ItemClass::of("NEW#1", "X"), None);
    }

    #[test]
    fn the_published_table_names_every_window() {
        let rows = Retention::default().published(Duration::days(7), Duration::minutes(15));
        let kept = |data: &str| rows.iter().find(|r| r.data == data).map(|r| r.kept.clone()).unwrap_or_default();
        assert_eq!(kept("usage_logs"), "12 months");
        assert_eq!(kept("payments"), "8 financial years after the financial year (April to March) they belong to");
        assert_eq!(kept("kyc"), "5 years after account closure");
        assert_eq!(kept("account"), "while the account is open, then 3 years after closure");
        assert_eq!(kept("login_records"), "180 days");
        assert_eq!(kept("request_logs"), "1 year");
    }

    /// The notice states the same reason for each row a closure keeps as the closure does, and no other row
    /// claims one.
    #[test]
    fn the_notice_states_each_holds_reason() {
        let rows = Retention::default().published(Duration::days(7), Duration::minutes(15));
        for hold in HOLDS {
            let row = rows.iter().find(|r| r.data == hold.data);
            assert_eq!(row.and_then(|r| r.after_closure), Some(hold.reason), "{}", hold.data);
        }
        let claimed = rows.iter().filter(|r| r.after_closure.is_some()).count();
        assert_eq!(claimed, HOLDS.len());
    }

    /// Every class says what closure does to it; one that lapses says why.
    #[test]
    fn every_class_says_what_closure_does_to_it() {
        use strum::IntoEnumIterator;
        for class in ItemClass::iter() {
            if let AfterClosure::Lapses(why) = class.after_closure() {
                assert!(!why.is_empty(), "{class:?} neither kept, erased nor said to lapse");
            }
        }
    }
}
