//! What an account's closure keeps, and the rule that makes us keep it (DPDP Act, 2023, s.8(7): erase once
//! the purpose is served, unless a law requires keeping it). Every class of item says whether it is kept
//! after closure and under which hold, erased at closure, or only lapses on its own (no personal data of the
//! account's, or gone within its short life). The closure's answer and its e-mail list exactly the holds
//! that apply, with their reasons, and `GET /v1/privacy` publishes the same reasons; tests check both
//! against this table.

use super::ItemClass;

/// A reason to keep an account's data after it closes: the published row it is and the rule behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The row of the published retention table (`GET /v1/privacy`).
    pub data: &'static str,
    pub reason: &'static str,
}

pub const ACCOUNT: Hold = Hold {
    data: "account",
    reason: "to answer claims about the account for the three years the Limitation Act, 1963 allows (Schedule, article 55), and to prove the consent it gave (DPDP Act, 2023, s.6(10)); the password, sessions and keys are erased",
};
pub const KYC: Hold = Hold {
    data: "kyc",
    reason: "the identity check behind the account's payments and tax documents, to answer fraud, chargeback and tax questions about them; five years, as the Prevention of Money-laundering (Maintenance of Records) Rules, 2005 keep identity records after a relationship ends",
};
pub const PAYMENTS: Hold = Hold {
    data: "payments",
    reason: "books of account and tax records: CGST Act, 2017 s.36 with CGST Rules, 2017 rule 56, and the Companies Act, 2013 s.128(5)",
};
pub const USAGE_LOGS: Hold = Hold {
    data: "usage_logs",
    reason: "the record of each charged call, the ledger's evidence; the DPDP Rules, 2025 (rule 8(3)) keep logs of processing a year",
};
pub const LOGIN_RECORDS: Hold = Hold {
    data: "login_records",
    reason: "logs of access to the account: CERT-In's directions of 28 April 2022, direction (iv), keep them 180 days in India",
};
pub const PRIVACY_REQUESTS: Hold = Hold {
    data: "privacy_requests",
    reason: "the evidence that each data-rights request was answered, this closure among them (DPDP Act, 2023, ss.11 to 13), for the three years a claim may be brought",
};
pub const MAIL_SUPPRESSION: Hold = Hold {
    data: "mail_suppression",
    reason: "an address that bounced or marked our mail as spam is not mailed again for a year, as Amazon SES requires of senders",
};

/// Every hold, in the order the closure lists them.
pub const HOLDS: [Hold; 7] = [ACCOUNT, KYC, PAYMENTS, USAGE_LOGS, LOGIN_RECORDS, PRIVACY_REQUESTS, MAIL_SUPPRESSION];

/// What happens to a class of item when its account closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterClosure {
    /// Deleted at closure (by the closing transaction or its follow-up).
    Erased,
    /// Kept under a hold, until its window ends.
    Kept(Hold),
    /// Not the account's personal data, or gone on its own within a short life: why.
    Lapses(&'static str),
}

impl ItemClass {
    /// What happens to this class when its account closes.
    pub fn after_closure(self) -> AfterClosure {
        use AfterClosure::{Erased, Kept, Lapses};
        use ItemClass::*;
        match self {
            Account | Consent | ClosedAccountEmail => Kept(ACCOUNT),
            KycRecord | KycDecision | KycVault | KycConsent => Kept(KYC),
            Wallet | WalletRegistry | Purse | LedgerEntry | Topup | TopupIndex | OpenTopup | RazorpayOrder
            | PaymentCredit | RefundDebit | WebhookEvent | PaymentReview | RefundRequest | Dispute | DisputeIndex
            | PendingAdjustment | ClosureRefund | RefundDue | PaymentIndex | TaxDocument | TaxDocumentIndex
            | UnnumberedDocument | ReceiptDue | AdvanceBalance | IssuedDocumentIndex | TaxInvoiceRun => Kept(PAYMENTS),
            UsageLog => Kept(USAGE_LOGS),
            LoginRecord => Kept(LOGIN_RECORDS),
            PrivacyRequest | OpenPrivacyRequest => Kept(PRIVACY_REQUESTS),
            Suppression => Kept(MAIL_SUPPRESSION),
            EmailClaim | AccountRegistry | Session | SessionIndex | KycClaim | ApiKey | ApiKeySlot | KeySpendTotal
            | DataExport | SpendLimit | SpendAlert | BillingProfile | Nominee => Erased,
            _ => Lapses(lapses(self)),
        }
    }
}

fn lapses(class: ItemClass) -> &'static str {
    use ItemClass::*;
    match class {
        LoginFailure | RateLimit | KycSubmissions | SpendWindow => "a count in a window of minutes to a month",
        KycRetryEntry | DigilockerSession | KycQueueEntry => {
            "a KYC check's place in a queue (the account's id and a time), dropped when answered"
        }
        KycMigration | SweepCursor | TaxSeries => "the service's own progress marker",
        Outbox => "a message waiting to be sent (the closure's confirmation among them), deleted once sent",
        MailDelivery | NoticeSent => "the record that a message went out once: its id, no content",
        EmailToken | ResetToken | UnsubscribeToken | ExportToken => {
            "a link's token, stored as a digest: it works for hours (an export's while the export is kept, an unsubscribe link's a year)"
        }
        CallBeat | InFlightSlot => "a running call's sign of life, gone within a day",
        PendingClosure => "the closure's unfinished follow-up, deleted when done",
        Incident | OperatorTotp | OperatorSession | OperatorSignIn => "operators' and incidents' records, no account's",
        _ => "",
    }
}
