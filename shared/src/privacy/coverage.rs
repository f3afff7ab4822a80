//! What the data export (`inferex-data-export/1`, schema `docs/export.schema.json`) holds of each class of
//! stored item, and who else received the person's data (DPDP Act s.11(1)(b)). The match is exhaustive: a
//! new class does not compile until it names its export section or why it has none, and the export test
//! walks every class (`ItemClass::iter()`) against a real export.

use serde_json::{Value, json};

use crate::retention::ItemClass;

/// Where the export shows a class of item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InExport {
    /// The export's top-level section holding it.
    Section(&'static str),
    /// Not in the export, and why (no personal data of the person's, or shown through another section).
    Left(&'static str),
}

/// The export's part of each class.
pub fn in_export(class: ItemClass) -> InExport {
    use InExport::{Left, Section};
    use ItemClass::*;
    match class {
        Account => Section("account"),
        Consent => Section("consents"),
        Session | SessionIndex => Section("sessions"),
        LoginRecord => Section("login_history"),
        KycRecord | KycDecision | KycVault | KycConsent => Section("kyc"),
        Wallet => Section("wallet"),
        LedgerEntry | RefundDebit => Section("ledger"),
        Topup | TopupIndex | RazorpayOrder => Section("topups"),
        PaymentCredit | PaymentIndex => Section("payments"),
        PaymentReview => Section("payment_reviews"),
        RefundRequest | ClosureRefund => Section("refund_request"),
        Dispute | DisputeIndex => Section("disputes"),
        ApiKey | ApiKeySlot => Section("api_keys"),
        UsageLog => Section("usage"),
        PrivacyRequest | OpenPrivacyRequest => Section("privacy_requests"),
        SpendLimit => Section("limits"),
        SpendAlert => Section("spend_alerts"),
        BillingProfile => Section("billing_profile"),
        TaxDocument | TaxDocumentIndex => Section("tax_documents"),
        Nominee => Section("nominee"),
        Suppression => Section("mail"),
        _ => Left(left_out(class)),
    }
}

/// Why a class is not a section of its own.
fn left_out(class: ItemClass) -> &'static str {
    use ItemClass::*;
    match class {
        EmailClaim | ClosedAccountEmail => "the address's link to the account; the address is in account",
        LoginFailure => "a count of recent failed logins; each attempt is in login_history",
        KycClaim => "a fingerprint that lets one document back one open account; the document is in kyc",
        KycRetryEntry | DigilockerSession | KycQueueEntry | KycSubmissions => {
            "a KYC check's place in a queue or its count of submissions; the check and its outcome are in kyc"
        }
        KycMigration | SweepCursor | TaxInvoiceRun | TaxSeries => "the service's own progress marker: no one's data",
        WalletRegistry | AccountRegistry | RefundDue | OpenTopup | UnnumberedDocument | ReceiptDue
        | IssuedDocumentIndex => "a place in a job's queue or list; what it points at is in its own section",
        WebhookEvent => {
            "Razorpay's notification as received, kept as the payment's evidence; the payer's details it carries are in payments"
        }
        PendingAdjustment => "a refund or dispute waiting for its payment's credit; applied, it is in ledger",
        PendingClosure => "a closure's unfinished follow-up: no data beyond the closure request",
        DataExport => "the export files themselves",
        Outbox | MailDelivery => {
            "a message waiting to be sent, or the record that it was sent once (message id only); the messages are in the person's mailbox"
        }
        EmailToken | ResetToken | UnsubscribeToken | ExportToken => "a link's token, stored only as a digest",
        RateLimit => "a count of requests in a rate window",
        NoticeSent => {
            "the record that a notice reached the account, so it is never sent twice; the notice was e-mailed"
        }
        CallBeat | InFlightSlot => "a running call's sign of life, minutes long; the call is in usage",
        Purse => "money of the wallet an instance holds for calls; the wallet's balance counts it",
        SpendWindow | KeySpendTotal => "running totals of spend; each call is in usage",
        AdvanceBalance => "the running balance of taxed advances, which the tax documents add up to",
        OperatorTotp | OperatorSession | OperatorSignIn => "operators' own records, no customer's",
        Incident => "a security incident's record; the notices it sent were e-mailed and are in the person's mailbox",
        _ => "",
    }
}

/// Who the person's data went to, what and why (DPDP Act s.11(1)(b)): our processors and the model
/// providers a call's prompt reaches.
pub fn processors(model_providers: Vec<Value>) -> Vec<Value> {
    let mut processors = vec![
        json!({
            "name": "Amazon Web Services India Private Limited",
            "role": "data processor: hosting (AWS Lambda, DynamoDB, S3, KMS, CloudWatch) in Mumbai, ap-south-1",
            "country": "IN",
            "data": "everything in this export",
        }),
        json!({
            "name": "Amazon Simple Email Service (Amazon Web Services)",
            "role": "data processor: sends the account's and billing e-mails",
            "country": "IN",
            "data": "the e-mail address, name and each message's content",
        }),
        json!({
            "name": "Razorpay Software Private Limited",
            "role": "payment aggregator: takes top-up payments and refunds them",
            "country": "IN",
            "data": "the top-up's amount and order, the payer's details entered in Checkout (method, phone, e-mail, UPI address, card or bank as Razorpay keeps them)",
        }),
        json!({
            "name": "Cashfree Payments India Private Limited (Verification Suite)",
            "role": "KYC provider: checks the PAN with the Income Tax Department, a GSTIN with GSTN, and the Aadhaar through DigiLocker",
            "country": "IN",
            "data": "the PAN, the name and date of birth, a GSTIN; DigiLocker shares the Aadhaar's name, date of birth and last four digits",
        }),
    ];
    for provider in model_providers {
        processors.push(json!({
            "name": provider["legal_name"],
            "role": "model provider: answers the API calls routed to it",
            "country": provider["country"],
            "data": "the prompt and parameters of each call routed to it (never stored by us)",
        }));
    }
    processors
}
