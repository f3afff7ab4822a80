//! Every class of item the system stores, how its lifetime is decided, and how an item's key names its class.

use serde::Serialize;

use super::*;

/// Every class of item the system stores (`ItemClass::iter()` walks them: the export's coverage test does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, strum::EnumIter)]
#[serde(rename_all = "snake_case")]
pub enum ItemClass {
    Account,
    Consent,
    EmailClaim,
    Session,
    SessionIndex,
    LoginRecord,
    LoginFailure,
    KycRecord,
    KycDecision,
    KycClaim,
    KycVault,
    KycConsent,
    KycRetryEntry,
    DigilockerSession,
    KycMigration,
    Wallet,
    WalletRegistry,
    LedgerEntry,
    Topup,
    TopupIndex,
    OpenTopup,
    RazorpayOrder,
    PaymentCredit,
    RefundDebit,
    WebhookEvent,
    PaymentReview,
    RefundRequest,
    ApiKey,
    ApiKeySlot,
    UsageLog,
    PrivacyRequest,
    DataExport,
    PendingClosure,
    Dispute,
    PendingAdjustment,
    KycSubmissions,
    Outbox,
    MailDelivery,
    Suppression,
    EmailToken,
    ResetToken,
    UnsubscribeToken,
    RateLimit,
    NoticeSent,
    AccountRegistry,
    KycQueueEntry,
    DisputeIndex,
    ClosureRefund,
    RefundDue,
    PaymentIndex,
    SweepCursor,
    CallBeat,
    Purse,
    SpendWindow,
    KeySpendTotal,
    SpendLimit,
    BillingProfile,
    SpendAlert,
    InFlightSlot,
    TaxDocument,
    TaxDocumentIndex,
    UnnumberedDocument,
    TaxSeries,
    ReceiptDue,
    AdvanceBalance,
    TaxInvoiceRun,
    IssuedDocumentIndex,
    OperatorTotp,
    OperatorSession,
    OperatorSignIn,
    Incident,
    Nominee,
    OpenPrivacyRequest,
    ClosedAccountEmail,
    ExportToken,
}

impl ItemClass {
    pub fn rule(self) -> Rule {
        use ItemClass::*;
        match self {
            Account | Consent => Rule::FromClosure(Span::Account),
            EmailClaim | AccountRegistry => Rule::ErasedAtClosure,
            Session | SessionIndex => Rule::Session,
            LoginRecord => Rule::FromWrite(Span::LoginRecords),
            LoginFailure => Rule::LoginThrottle,
            KycSubmissions => Rule::SubmissionWindow,
            // A check's consent record is kept as long as what was checked.
            KycRecord | KycDecision | KycVault | KycConsent => Rule::FromClosure(Span::Kyc),
            // Dropped when the provider answers; a stale entry is skipped, and deleted, by the next pass.
            KycRetryEntry | DigilockerSession => Rule::Lifetime(KYC_QUEUE_LIFETIME),
            // The Aadhaar erasure's place and its record of having run (no personal data): kept as evidence.
            KycMigration => Rule::Lifetime(MIGRATION_RECORD_LIFETIME),
            // The claim makes one document back one open account; a closed account releases it (the KYC
            // record keeps the fingerprint as evidence), so its owner can verify a new account.
            KycClaim => Rule::ErasedAtClosure,
            // The wallet is the balance the ledger adds up to: kept as long as the ledger, from closure.
            Wallet | WalletRegistry => Rule::FromClosure(Span::Payments),
            // Money of the wallet's, held by an instance: it never expires, the sweeper returns it when idle.
            Purse => Rule::FromClosure(Span::Payments),
            LedgerEntry | Topup | TopupIndex | OpenTopup | RazorpayOrder | PaymentCredit | RefundDebit
            | WebhookEvent | PaymentReview | RefundRequest | Dispute | DisputeIndex | PendingAdjustment
            | ClosureRefund | RefundDue | PaymentIndex => Rule::FromWrite(Span::Payments),
            // Tax documents and their series: the same financial years as the payments behind them.
            // The taxed advances' balance: from its last change.
            TaxDocument | TaxDocumentIndex | UnnumberedDocument | TaxSeries | ReceiptDue | AdvanceBalance
            | IssuedDocumentIndex => Rule::FromWrite(Span::Payments),
            // A month's invoice run: its place, read until the run is done, kept a little over a year.
            TaxInvoiceRun => Rule::Lifetime(TAX_INVOICE_RUN_LIFETIME),
            ApiKey | ApiKeySlot => Rule::KeyExpiry,
            UsageLog => Rule::FromWrite(Span::Usage),
            // A closure's unfinished follow-up; deleted as soon as it is done.
            PrivacyRequest | PendingClosure => Rule::FromWrite(Span::PrivacyRequests),
            DataExport => Rule::FromWrite(Span::Exports),
            Outbox => Rule::Lifetime(OUTBOX_LIFETIME),
            MailDelivery => Rule::Lifetime(DELIVERY_RECORD_LIFETIME),
            Suppression => Rule::Lifetime(SUPPRESSION_LIFETIME),
            EmailToken => Rule::Lifetime(EMAIL_TOKEN_LIFETIME),
            // A mailed export's link works as long as the export is kept.
            ExportToken => Rule::FromWrite(Span::Exports),
            ResetToken => Rule::Lifetime(RESET_TOKEN_LIFETIME),
            UnsubscribeToken => Rule::Lifetime(UNSUBSCRIBE_LIFETIME),
            NoticeSent => Rule::Lifetime(NOTICE_LIFETIME),
            SweepCursor => Rule::Lifetime(SWEEP_CURSOR_LIFETIME),
            // Read only while its call may run (minutes); kept a day, then dropped.
            CallBeat => Rule::Lifetime(CALL_BEAT_LIFETIME),
            // Dropped when decided; an entry whose submission changed is skipped, and deleted, when listed.
            KycQueueEntry => Rule::Lifetime(KYC_QUEUE_LIFETIME),
            RateLimit => Rule::RateWindow,
            SpendWindow => Rule::SpendWindow,
            // A key's all-time spend: as long as the key.
            KeySpendTotal => Rule::KeyExpiry,
            // A setting of the account's: nothing requires keeping it after closure.
            SpendLimit => Rule::ErasedAtClosure,
            // Each tax document keeps the profile it was issued under; the profile itself goes at closure.
            BillingProfile => Rule::ErasedAtClosure,
            SpendAlert => Rule::Lifetime(SPEND_ALERT_LIFETIME),
            // Deleted when its call ends; a dead call's frees itself when no call can still be running.
            InFlightSlot => Rule::Lifetime(IN_FLIGHT_SLOT_LIFETIME),
            // Renewed by every sign-in: an operator idle that long enrols again (with a new token).
            OperatorTotp => Rule::Lifetime(OPERATOR_ENROLMENT_LIFETIME),
            OperatorSession => Rule::Lifetime(OPERATOR_SESSION_LIFETIME),
            // Kept like customers' login records (CERT-In: logs of access, 180 days).
            OperatorSignIn => Rule::FromWrite(Span::LoginRecords),
            // The record of a breach and how it was handled: kept for the Board's and CERT-In's questions.
            Incident => Rule::Lifetime(INCIDENT_RECORD_LIFETIME),
            // Names who may exercise the account's rights: nothing is left to exercise after closure.
            Nominee => Rule::ErasedAtClosure,
            // A request's place in the operators' register: deleted when answered, else kept like the request.
            OpenPrivacyRequest => Rule::FromWrite(Span::PrivacyRequests),
            // Finds the closed account a request by e-mail names, as long as the account is kept.
            ClosedAccountEmail => Rule::FromClosure(Span::Account),
        }
    }

    /// The class of a stored item, from its key (vault keys are `VAULT#...`, a prefix the main table never
    /// uses); `None` for a key no module writes.
    pub fn of(pk: &str, sk: &str) -> Option<Self> {
        use crate::store::schema::{self, kind, prefix, sk as fixed};
        use ItemClass::*;
        let (partition, _) = pk.split_once('#').unwrap_or((pk, ""));
        let class = match (partition, sk) {
            (kind::USER, fixed::PROFILE) => Account,
            (kind::USER, fixed::KYC) => KycRecord,
            (kind::USER, fixed::WALLET) => Wallet,
            (kind::USER, fixed::BILLING) => BillingProfile,
            (kind::USER, fixed::ADVANCES) => AdvanceBalance,
            (kind::USER, fixed::NOMINEE) => Nominee,
            (kind::USER, sk) => Self::of_user_item(sk)?,
            (kind::EMAIL, fixed::EMAIL) => EmailClaim,
            (kind::SESSION, fixed::SESSION) => Session,
            (kind::LOGINS, _) => LoginRecord,
            (kind::LOGIN_WINDOW, _) => LoginFailure,
            (kind::KYC_CLAIM, fixed::CLAIM) => KycClaim,
            (kind::KYC_SUBMISSIONS, fixed::WINDOW) | (kind::KYC_DIGILOCKER_STARTS, fixed::WINDOW) => KycSubmissions,
            (kind::KYC_DIGILOCKER, fixed::ATTEMPT) => DigilockerSession,
            (kind::KYC_RETRY, _) if pk == schema::KYC_RETRY_PK => KycRetryEntry,
            (kind::MIGRATION, fixed::CURSOR) if pk == schema::AADHAAR_ERASURE_PK => KycMigration,
            (kind::WALLETS, _) => WalletRegistry,
            (kind::TOPUP, fixed::TOPUP) => Topup,
            (kind::OPEN_TOPUPS, _) if pk == schema::OPEN_TOPUPS_PK => OpenTopup,
            (kind::ORDER, fixed::ORDER) => RazorpayOrder,
            (kind::PAYMENT, fixed::CREDIT) => PaymentCredit,
            (kind::PAYMENT, sk) if sk.starts_with(prefix::PENDING) => PendingAdjustment,
            (kind::DISPUTE, fixed::DISPUTE) => Dispute,
            (kind::REFUND, fixed::DEBIT) => RefundDebit,
            (kind::EVENT, fixed::EVENT) => WebhookEvent,
            (kind::PAYMENT_REVIEWS, _) => PaymentReview,
            (kind::REFUND_REQUESTS, _) => RefundRequest,
            (kind::CLOSURES, _) if pk == schema::PENDING_CLOSURES_PK => PendingClosure,
            (kind::API_KEY, fixed::KEY) => ApiKey,
            (kind::VAULT, fixed::SECRET) => KycVault,
            (kind::OUTBOX, _) if pk == schema::OUTBOX_PK => Outbox,
            (kind::MAIL_SENT, fixed::SENT) => MailDelivery,
            (kind::SUPPRESSED, fixed::SUPPRESSED) => Suppression,
            (kind::EMAIL_TOKEN, fixed::TOKEN) => EmailToken,
            (kind::RESET_TOKEN, fixed::TOKEN) => ResetToken,
            (kind::UNSUBSCRIBE, fixed::TOKEN) => UnsubscribeToken,
            (kind::RATE, fixed::WINDOW) => RateLimit,
            (kind::NOTICE, _) => NoticeSent,
            (kind::ACCOUNTS, _) if pk == schema::ACCOUNTS_PK => AccountRegistry,
            (kind::KYC_QUEUE, _) if pk == schema::KYC_QUEUE_PK => KycQueueEntry,
            (kind::DISPUTES, _) if pk == schema::DISPUTES_PK => DisputeIndex,
            (kind::REFUNDS_DUE, _) if pk == schema::REFUNDS_DUE_PK => RefundDue,
            (kind::SWEEPER, fixed::CURSOR) => SweepCursor,
            (kind::TAX_DOCUMENT, fixed::DOCUMENT) => TaxDocument,
            (kind::TAX_SERIES, fixed::COUNTER) => TaxSeries,
            // A month's run: its place, tallies and accounts held back (`gst::invoice_run`).
            (kind::TAX_INVOICE_RUN, _) => TaxInvoiceRun,
            (kind::TAX_DOCUMENTS, _) if pk == schema::UNNUMBERED_DOCUMENTS_PK => UnnumberedDocument,
            (kind::TAX_DOCUMENTS, _) if pk == schema::RECEIPTS_DUE_PK => ReceiptDue,
            (kind::TAX_DOCUMENTS, _) if pk.starts_with(&schema::issued_documents_pk("")) => IssuedDocumentIndex,
            (kind::IN_FLIGHT, sk) if sk.starts_with(prefix::SLOT) => InFlightSlot,
            (kind::SPEND, fixed::TOTAL) => KeySpendTotal,
            (kind::SPEND, fixed::LIMIT) => SpendLimit,
            (kind::SPEND, sk) if sk.starts_with(prefix::DAY) || sk.starts_with(prefix::MONTH) => SpendWindow,
            _ => return Self::of_operator_item(pk, partition, sk),
        };
        Some(class)
    }

    /// The operators' items (their authenticator, sign-in records and sessions), incidents, the data-rights
    /// register, closed accounts' addresses and mailed export links.
    fn of_operator_item(pk: &str, partition: &str, sk: &str) -> Option<Self> {
        use crate::store::schema::{self, kind, prefix, sk as fixed};
        match (partition, sk) {
            (kind::OPERATOR, fixed::TOTP) => Some(ItemClass::OperatorTotp),
            (kind::OPERATOR, sk) if sk.starts_with(prefix::OPERATOR_SIGN_IN) => Some(ItemClass::OperatorSignIn),
            (kind::OPERATOR_SESSION, fixed::SESSION) => Some(ItemClass::OperatorSession),
            (kind::INCIDENT, fixed::INCIDENT) | (kind::INCIDENTS, _) => Some(ItemClass::Incident),
            (kind::PRIVACY_REQUESTS, _) if pk == schema::OPEN_PRIVACY_REQUESTS_PK => {
                Some(ItemClass::OpenPrivacyRequest)
            }
            (kind::CLOSED_EMAIL, _) => Some(ItemClass::ClosedAccountEmail),
            (kind::EXPORT_TOKEN, fixed::TOKEN) => Some(ItemClass::ExportToken),
            _ => None,
        }
    }

    /// The class of an item in a user's partition, from its sort key's prefix.
    fn of_user_item(sk: &str) -> Option<Self> {
        use crate::store::schema::prefix;
        use ItemClass::*;
        let class = match sk.get(..=sk.find('#')?)? {
            prefix::CONSENT => Consent,
            prefix::SESSION => SessionIndex,
            prefix::LOGIN => LoginRecord,
            prefix::KYC_DECISION => KycDecision,
            prefix::KYC_CONSENT => KycConsent,
            prefix::LEDGER => LedgerEntry,
            prefix::TOPUP => TopupIndex,
            prefix::API_KEY_SLOT => ApiKeySlot,
            prefix::USAGE => UsageLog,
            prefix::PRIVACY_REQUEST => PrivacyRequest,
            prefix::EXPORT => DataExport,
            prefix::CLOSURE_REFUND => ClosureRefund,
            prefix::PAYMENT_INDEX => PaymentIndex,
            prefix::CALL_BEAT => CallBeat,
            prefix::PURSE => Purse,
            prefix::SPEND_ALERT => SpendAlert,
            prefix::TAX_DOCUMENT => TaxDocumentIndex,
            _ => return None,
        };
        Some(class)
    }
}
