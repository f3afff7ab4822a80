//! Every key the system stores, spelled here and nowhere else: partition keys, sort keys and sort-key
//! prefixes. Each item's owning module builds its keys with these; `retention::ItemClass::of` and the page
//! cursors read them back with these. `schema_is_the_only_place_keys_are_spelled` (shared/tests) fails when
//! a key literal appears in any other source file.
//!
//! Main table, by partition (`pk` / `sk`):
//! - `USER#<id>` / `PROFILE`, `KYC`, `WALLET`, `BILLING`, and the prefixed sort keys `CONSENT#`, `SESSION#`, `LOGIN#`,
//!   `KYCDECISION#`, `LEDGER#`, `TOPUP#`, `APIKEYSLOT#`, `USAGE#`, `KYCCONSENT#`, `PRIVACYREQ#`, `EXPORT#`, `CLOSUREREFUND#`,
//!   `PAYMENT#`, `CALLBEAT#` (a running call's last sign of life),
//!   `PURSE#` (an instance's purse of the account's money), `SPENDALERT#` (a spend limit's alert).
//! - `EMAIL#<email>` / `EMAIL`; `SESSION#<hash>` / `SESSION`; `APIKEY#<hash>` / `KEY`.
//! - `LOGIN#<email>` / `<time>`; `LOGINFAIL#<email>` / `WINDOW`; `KYCSUBMIT#<id>` / `WINDOW`.
//! - `KYCDOC#<fingerprint>` / `CLAIM`; `KYCDIGILOCKER#<verification id>` / `ATTEMPT`;
//!   `KYCDLSTART#<id>` / `WINDOW`; `MIGRATION#aadhaar-erasure` / `CURSOR`.
//! - `SPEND#api-key#<key id>` / `TOTAL`, `DAY#<date>`, `MONTH#<month>`; `SPEND#account#<user id>` / `LIMIT`,
//!   `MONTH#<month>` (spend limits' windows, IST); `INFLIGHT#<user id>` / `SLOT#<n>` (a running call's slot).
//! - `TOPUP#<id>` / `TOPUP`; `RZPORDER#<order>` / `ORDER`; `RZPPAYMENT#<payment>` / `CREDIT` and
//!   `PENDING#<event>#<id>`; `RZPREFUND#<refund>` / `DEBIT`; `RZPEVENT#<event>` / `EVENT`;
//!   `RZPDISPUTE#<dispute>` / `DISPUTE`.
//! - Singleton partitions: `WALLETS` / `<user id>`; `TOPUPS#OPEN` / `<time>#<id>`; `PAYMENTREVIEW` / `<time>`;
//!   `REFUNDREQUEST` / `<user id>`; `CLOSURES#PENDING` / `<user id>`; `OUTBOX` / `<time>#<id>`;
//!   `ACCOUNTS` / `<user id>`; `KYCQUEUE` / `<time>#<user id>`; `KYCRETRY` / `<time>#<user id>`; `DISPUTES` / `<dispute id>`;
//!   `REFUNDS#DUE` / `<user id>`; `SWEEPER` / `CURSOR`.
//! - E-mail: `EMAILTOKEN#<hash>` / `TOKEN`; `EXPORTTOKEN#<hash>` / `TOKEN`; `RESETTOKEN#<hash>` / `TOKEN`; `UNSUB#<hash>` / `TOKEN`;
//!   `MAILSENT#<id>` / `SENT`; `SUPPRESS#<email>` / `SUPPRESSED`; `RATE#<what>#<who>` / `WINDOW`;
//!   `NOTICE#<what>` / `<user id>` (one notice per account and policy version or campaign) and `COMPLETE`.
//!
//! - Operators: `OPERATOR#<name>` / `TOTP` and `SIGNIN#<time>`; `OPSESSION#<hash>` / `SESSION`.
//! - Incidents: `INCIDENT#<id>` / `INCIDENT`; `INCIDENTS` / `<time>` (newest first).
//! - Data rights: `PRIVACYREQS#OPEN` / `<request id>` (requests not answered yet); `CLOSEDEMAIL#<email>` /
//!   `<user id>` (a closed account's address).
//!
//! Vault table: `VAULT#<reference>` / `SECRET`.

use chrono::{DateTime, Utc};

use crate::secrets::random_suffix;

/// The kinds of partition: the part of a partition key before its first `#` (what `ItemClass::of` reads).
pub mod kind {
    pub const USER: &str = "USER";
    pub const EMAIL: &str = "EMAIL";
    pub const SESSION: &str = "SESSION";
    pub const API_KEY: &str = "APIKEY";
    pub const LOGINS: &str = "LOGIN";
    pub const LOGIN_WINDOW: &str = "LOGINFAIL";
    pub const KYC_SUBMISSIONS: &str = "KYCSUBMIT";
    pub const KYC_CLAIM: &str = "KYCDOC";
    pub const KYC_DIGILOCKER: &str = "KYCDIGILOCKER";
    pub const KYC_DIGILOCKER_STARTS: &str = "KYCDLSTART";
    pub const KYC_RETRY: &str = "KYCRETRY";
    pub const MIGRATION: &str = "MIGRATION";
    pub const TOPUP: &str = "TOPUP";
    pub const OPEN_TOPUPS: &str = "TOPUPS";
    pub const ORDER: &str = "RZPORDER";
    pub const PAYMENT: &str = "RZPPAYMENT";
    pub const REFUND: &str = "RZPREFUND";
    pub const EVENT: &str = "RZPEVENT";
    pub const DISPUTE: &str = "RZPDISPUTE";
    pub const WALLETS: &str = "WALLETS";
    pub const PAYMENT_REVIEWS: &str = "PAYMENTREVIEW";
    pub const REFUND_REQUESTS: &str = "REFUNDREQUEST";
    pub const CLOSURES: &str = "CLOSURES";
    pub const VAULT: &str = "VAULT";
    pub const OUTBOX: &str = "OUTBOX";
    pub const EMAIL_TOKEN: &str = "EMAILTOKEN";
    pub const EXPORT_TOKEN: &str = "EXPORTTOKEN";
    pub const RESET_TOKEN: &str = "RESETTOKEN";
    pub const UNSUBSCRIBE: &str = "UNSUB";
    pub const MAIL_SENT: &str = "MAILSENT";
    pub const SUPPRESSED: &str = "SUPPRESS";
    pub const RATE: &str = "RATE";
    pub const NOTICE: &str = "NOTICE";
    pub const ACCOUNTS: &str = "ACCOUNTS";
    pub const KYC_QUEUE: &str = "KYCQUEUE";
    pub const DISPUTES: &str = "DISPUTES";
    pub const REFUNDS_DUE: &str = "REFUNDS";
    pub const SWEEPER: &str = "SWEEPER";
    pub const SPEND: &str = "SPEND";
    pub const IN_FLIGHT: &str = "INFLIGHT";
    pub const TAX_DOCUMENT: &str = "TAXDOC";
    pub const TAX_SERIES: &str = "TAXSERIES";
    pub const TAX_DOCUMENTS: &str = "TAXDOCS";
    pub const TAX_INVOICE_RUN: &str = "TAXINVOICES";
    pub const OPERATOR: &str = "OPERATOR";
    pub const OPERATOR_SESSION: &str = "OPSESSION";
    pub const INCIDENT: &str = "INCIDENT";
    pub const INCIDENTS: &str = "INCIDENTS";
    pub const PRIVACY_REQUESTS: &str = "PRIVACYREQS";
    pub const CLOSED_EMAIL: &str = "CLOSEDEMAIL";
}

/// Fixed sort keys.
pub mod sk {
    pub const PROFILE: &str = "PROFILE";
    pub const KYC: &str = "KYC";
    pub const WALLET: &str = "WALLET";
    pub const EMAIL: &str = "EMAIL";
    pub const SESSION: &str = "SESSION";
    pub const KEY: &str = "KEY";
    pub const WINDOW: &str = "WINDOW";
    pub const CLAIM: &str = "CLAIM";
    pub const ATTEMPT: &str = "ATTEMPT";
    pub const BILLING: &str = "BILLING";
    pub const TOPUP: &str = "TOPUP";
    pub const ORDER: &str = "ORDER";
    pub const CREDIT: &str = "CREDIT";
    pub const DEBIT: &str = "DEBIT";
    pub const EVENT: &str = "EVENT";
    pub const DISPUTE: &str = "DISPUTE";
    pub const SECRET: &str = "SECRET";
    pub const TOKEN: &str = "TOKEN";
    pub const SENT: &str = "SENT";
    pub const SUPPRESSED: &str = "SUPPRESSED";
    /// The run-level marker of a notice: every account has it.
    pub const COMPLETE: &str = "COMPLETE";
    pub const CURSOR: &str = "CURSOR";
    /// A key's all-time spend window.
    pub const TOTAL: &str = "TOTAL";
    /// An account's monthly spend limit.
    pub const LIMIT: &str = "LIMIT";
    /// A tax document (`TAXDOC#<id>`).
    pub const DOCUMENT: &str = "DOCUMENT";
    /// The last number a tax document series gave (`TAXSERIES#<series>#<financial year>`).
    pub const COUNTER: &str = "COUNTER";
    /// An account's taxed advances not yet adjusted against a supply (`gst::advances`).
    pub const ADVANCES: &str = "ADVANCES";
    /// An account's nominee (DPDP Act s.14).
    pub const NOMINEE: &str = "NOMINEE";
    /// An operator's enrolled authenticator (`OPERATOR#<name>`).
    pub const TOTP: &str = "TOTP";
    /// A security incident's record (`INCIDENT#<id>`).
    pub const INCIDENT: &str = "INCIDENT";
}

/// Sort-key prefixes of the items kept in a user's partition (and the payment's kept adjustments), each
/// followed by a time sort key or an id. The part before `#` is what `ItemClass::of` reads.
pub mod prefix {
    pub const CONSENT: &str = "CONSENT#";
    pub const SESSION: &str = "SESSION#";
    pub const LOGIN: &str = "LOGIN#";
    pub const KYC_DECISION: &str = "KYCDECISION#";
    pub const KYC_CONSENT: &str = "KYCCONSENT#";
    pub const LEDGER: &str = "LEDGER#";
    pub const TOPUP: &str = "TOPUP#";
    pub const API_KEY_SLOT: &str = "APIKEYSLOT#";
    pub const USAGE: &str = "USAGE#";
    pub const PRIVACY_REQUEST: &str = "PRIVACYREQ#";
    pub const EXPORT: &str = "EXPORT#";
    pub const PENDING: &str = "PENDING#";
    pub const CLOSURE_REFUND: &str = "CLOSUREREFUND#";
    pub const PAYMENT_INDEX: &str = "PAYMENT#";
    pub const CALL_BEAT: &str = "CALLBEAT#";
    pub const PURSE: &str = "PURSE#";
    pub const SPEND_ALERT: &str = "SPENDALERT#";
    /// A running call's slot in an `INFLIGHT#` partition: `SLOT#<n>`.
    pub const SLOT: &str = "SLOT#";
    /// A spend window of one day (IST) in a `SPEND#` partition: `DAY#<yyyy-mm-dd>`.
    pub const DAY: &str = "DAY#";
    /// A spend window of one month (IST) in a `SPEND#` partition: `MONTH#<yyyy-mm>`.
    pub const MONTH: &str = "MONTH#";
    /// An account's tax documents, oldest first: `TAXDOC#<time sort key>` naming the document.
    pub const TAX_DOCUMENT: &str = "TAXDOC#";
    /// In a month's `TAXINVOICES#` partition: an account's usage read so far, `TALLY#<user id>`.
    pub const INVOICE_TALLY: &str = "TALLY#";
    /// In a month's `TAXINVOICES#` partition: an account whose invoice failed, retried, `HELD#<user id>`.
    pub const INVOICE_HELD: &str = "HELD#";
    /// In an `OPERATOR#<name>` partition: one sign-in attempt, `SIGNIN#<time sort key>`.
    pub const OPERATOR_SIGN_IN: &str = "SIGNIN#";
}

/// Singleton partitions.
pub const WALLETS_PK: &str = kind::WALLETS;
pub const OPEN_TOPUPS_PK: &str = "TOPUPS#OPEN";
pub const PAYMENT_REVIEWS_PK: &str = kind::PAYMENT_REVIEWS;
pub const REFUND_REQUESTS_PK: &str = kind::REFUND_REQUESTS;
pub const PENDING_CLOSURES_PK: &str = "CLOSURES#PENDING";
pub const OUTBOX_PK: &str = kind::OUTBOX;
/// Registry of every open account (sort key = user id), walked by the notices that go to every account.
pub const ACCOUNTS_PK: &str = kind::ACCOUNTS;
/// Pending KYC submissions, oldest first (sort key `<submitted millis>#<user id>`), for the operators.
pub const KYC_QUEUE_PK: &str = kind::KYC_QUEUE;
/// PAN checks the provider has not answered yet (sort key `<submitted millis>#<user id>`), for the jobs.
pub const KYC_RETRY_PK: &str = kind::KYC_RETRY;
/// The erasure of the Aadhaar numbers held before DigiLocker: its place in the accounts' registry.
pub const AADHAAR_ERASURE_PK: &str = "MIGRATION#aadhaar-erasure";
/// Every dispute Razorpay reported (sort key = the dispute id), for the operators.
pub const DISPUTES_PK: &str = kind::DISPUTES;
/// Closed accounts whose refund request may still go back to its payments through Razorpay's refund API.
pub const REFUNDS_DUE_PK: &str = "REFUNDS#DUE";
/// Tax documents written and not numbered yet (sort key `<created millis>#<document id>`), numbered in
/// that order.
pub const UNNUMBERED_DOCUMENTS_PK: &str = "TAXDOCS#UNNUMBERED";
/// Documents due and not written yet (sort key = the document's id): a credit writes its receipt voucher's,
/// a refund its refund voucher's; writing the document deletes it, the jobs write what a stopped process
/// left.
pub const RECEIPTS_DUE_PK: &str = "TAXDOCS#DUE";
/// Security incidents, newest first (sort key `<opened millis>#<random>`, naming the incident).
pub const INCIDENTS_PK: &str = kind::INCIDENTS;
/// Data-rights requests not answered yet, from every account (sort key = the request's id): the register
/// operators list by due date and the jobs alarm on.
pub const OPEN_PRIVACY_REQUESTS_PK: &str = "PRIVACYREQS#OPEN";
/// The stale-hold sweeper's place in the wallets' registry (`CURSOR`), saved when a run meets its budget.
pub const SWEEPER_PK: &str = kind::SWEEPER;

fn key(kind: &str, id: &str) -> String {
    format!("{kind}#{id}")
}

pub fn user_pk(user_id: &str) -> String {
    key(kind::USER, user_id)
}

/// The user id a `USER#<id>` partition key names (a stream record's key read back).
pub fn user_id_of(pk: &str) -> Option<&str> {
    pk.strip_prefix(kind::USER)?.strip_prefix('#').filter(|id| !id.is_empty())
}

pub fn email_pk(email: &str) -> String {
    key(kind::EMAIL, email)
}

/// A closed account's address (sort key = the user id): how a request that arrives by e-mail finds the account
/// once its address is released.
pub fn closed_email_pk(email: &str) -> String {
    key(kind::CLOSED_EMAIL, email)
}

pub fn session_pk(token_hash: &str) -> String {
    key(kind::SESSION, token_hash)
}

/// An API key's per-minute rate window (`WINDOW`), a counted window like [`rate_pk`]'s, in a partition of its
/// own so that a busy key's counting never shares the account's partition with its wallet.
pub fn rate_window_pk(key_id: &str) -> String {
    format!("{}#api-key#{key_id}", kind::RATE)
}

/// An API key's spend windows (`TOTAL`, `DAY#<date>`, `MONTH#<month>`), in a partition of their own.
pub fn key_spend_pk(key_id: &str) -> String {
    format!("{}#api-key#{key_id}", kind::SPEND)
}

/// An account's running inference calls, one slot each (`SLOT#<n>`), as many as it may run at once.
pub fn in_flight_pk(user_id: &str) -> String {
    key(kind::IN_FLIGHT, user_id)
}

/// An account's limits (`LIMIT`) and its monthly spend windows (`MONTH#<month>`).
pub fn account_spend_pk(user_id: &str) -> String {
    format!("{}#account#{user_id}", kind::SPEND)
}

pub fn api_key_pk(key_hash: &str) -> String {
    key(kind::API_KEY, key_hash)
}

/// Attempts on an email no account has.
pub fn logins_pk(email: &str) -> String {
    key(kind::LOGINS, email)
}

/// An email's login throttling window.
pub fn login_window_pk(email: &str) -> String {
    key(kind::LOGIN_WINDOW, email)
}

pub fn kyc_submissions_pk(user_id: &str) -> String {
    key(kind::KYC_SUBMISSIONS, user_id)
}

/// An open DigiLocker session (`ATTEMPT`), by the verification id sent to the provider.
pub fn kyc_digilocker_pk(verification_id: &str) -> String {
    key(kind::KYC_DIGILOCKER, verification_id)
}

/// An account's window of DigiLocker sessions (`WINDOW`).
pub fn kyc_digilocker_starts_pk(user_id: &str) -> String {
    key(kind::KYC_DIGILOCKER_STARTS, user_id)
}

pub fn kyc_claim_pk(fingerprint: &str) -> String {
    key(kind::KYC_CLAIM, fingerprint)
}

pub fn vault_pk(reference: &str) -> String {
    key(kind::VAULT, reference)
}

pub fn topup_pk(topup_id: &str) -> String {
    key(kind::TOPUP, topup_id)
}

pub fn order_pk(order_id: &str) -> String {
    key(kind::ORDER, order_id)
}

pub fn payment_pk(payment_id: &str) -> String {
    key(kind::PAYMENT, payment_id)
}

pub fn tax_document_pk(document_id: &str) -> String {
    key(kind::TAX_DOCUMENT, document_id)
}

/// The documents written in a month (IST), for its GST return, e.g. `TAXDOCS#MONTH#2026-11` (sort key
/// `<written millis>#<document id>`).
pub fn issued_documents_pk(month: &str) -> String {
    format!("{}#MONTH#{month}", kind::TAX_DOCUMENTS)
}

/// The place of a month's tax invoice run, e.g. `TAXINVOICES#2026-11`.
pub fn tax_invoice_run_pk(month: &str) -> String {
    key(kind::TAX_INVOICE_RUN, month)
}

/// A document series of one financial year, e.g. `TAXSERIES#RV#2026`.
pub fn tax_series_pk(series: &str, financial_year: i32) -> String {
    format!("{}#{series}#{financial_year}", kind::TAX_SERIES)
}

pub fn refund_pk(refund_id: &str) -> String {
    key(kind::REFUND, refund_id)
}

pub fn event_pk(event_id: &str) -> String {
    key(kind::EVENT, event_id)
}

pub fn dispute_pk(dispute_id: &str) -> String {
    key(kind::DISPUTE, dispute_id)
}

/// A data export's download link sent by e-mail (`TOKEN`), by the digest of its token.
pub fn export_token_pk(token_hash: &str) -> String {
    key(kind::EXPORT_TOKEN, token_hash)
}

pub fn email_token_pk(token_hash: &str) -> String {
    key(kind::EMAIL_TOKEN, token_hash)
}

pub fn reset_token_pk(token_hash: &str) -> String {
    key(kind::RESET_TOKEN, token_hash)
}

pub fn unsubscribe_pk(token_hash: &str) -> String {
    key(kind::UNSUBSCRIBE, token_hash)
}

pub fn mail_sent_pk(message_id: &str) -> String {
    key(kind::MAIL_SENT, message_id)
}

pub fn suppressed_pk(email: &str) -> String {
    key(kind::SUPPRESSED, email)
}

/// A counted rate window: `what` is limited per `who` (an address, an IP, an account).
pub fn rate_pk(what: &str, who: &str) -> String {
    format!("{}#{what}#{who}", kind::RATE)
}

/// An operator's partition: their authenticator and sign-in records.
pub fn operator_pk(name: &str) -> String {
    key(kind::OPERATOR, name)
}

/// A security incident's record.
pub fn incident_pk(id: &str) -> String {
    key(kind::INCIDENT, id)
}

/// An operator session, by its token's digest.
pub fn operator_session_pk(token_hash: &str) -> String {
    key(kind::OPERATOR_SESSION, token_hash)
}

/// The marker that one notice (`what`: a policy version, a campaign) went to an account (the sort key).
pub fn notice_pk(what: &str) -> String {
    key(kind::NOTICE, what)
}

/// A user-partition sort key: `prefix` and an id (`SESSION#<hash>`, `EXPORT#<id>`).
pub fn prefixed(prefix: &str, id: &str) -> String {
    format!("{prefix}{id}")
}

/// A sort key that orders by time and never collides: zero-padded epoch milliseconds plus randomness.
pub fn time_sort_key(prefix: &str, at: DateTime<Utc>) -> String {
    format!("{prefix}{:013}#{}", at.timestamp_millis().max(0), random_suffix())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_their_kind_a_hash_and_the_id() {
        assert_eq!(user_pk("usr_1"), "USER#usr_1");
        assert_eq!(OPEN_TOPUPS_PK.split_once('#').map(|(k, _)| k), Some(kind::OPEN_TOPUPS));
        assert_eq!(PENDING_CLOSURES_PK.split_once('#').map(|(k, _)| k), Some(kind::CLOSURES));
        assert_eq!(prefixed(prefix::EXPORT, "exp_1"), "EXPORT#exp_1");
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap_or_default();
        assert!(time_sort_key(prefix::LEDGER, at).starts_with("LEDGER#1700000000123#"));
    }
}
