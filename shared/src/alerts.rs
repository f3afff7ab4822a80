//! Money-path and security anomalies that must reach a person. Each is logged at error level (so no `INFEREX_LOG` level
//! the template allows filters it out) with an `alert` field naming it
//! (`tracing::error!(alert = alerts::USAGE_OVER_HOLD, ...)`); in Lambda the logs are JSON, where the field
//! reads `$.fields.alert`, and template.yaml turns each name into a CloudWatch metric (a metric filter on
//! the logs of the functions that can log it) with an alarm on the alarm topic. `check-template.py` reads
//! [`ALL`] here and fails when an alert has no metric filter or no alarm.

/// A provider reported more usage than the call's hold: charged in full, but the bound is wrong.
pub const USAGE_OVER_HOLD: &str = "usage_over_hold";
/// A call's settlement was left to the sweeper (its process died or its store failed), which charged it
/// what it recorded or its whole hold.
pub const SETTLED_BY_SWEEPER: &str = "settled_by_sweeper";
/// A webhook with a bad or missing signature was refused (a forgery, or a secret out of step).
pub const WEBHOOK_SIGNATURE_INVALID: &str = "webhook_signature_invalid";
/// A payment, refund or dispute did not match our records and was recorded for review (reconciliation
/// mismatches among them).
pub const PAYMENT_REVIEW: &str = "payment_review";
/// A scheduled job failed as a whole (the invocation fails too).
pub const JOB_FAILED: &str = "job_failed";

/// The KYC provider refused a check (our credentials, its allow-list or our balance with it): customers'
/// checks stay pending until a person fixes it.
pub const KYC_PROVIDER_REFUSED: &str = "kyc_provider_refused";

/// An operator's sign-in attempts ran out (someone is guessing codes with their token, or they are locked
/// out): the token may be stolen.
pub const OPERATOR_SIGN_IN_THROTTLED: &str = "operator_sign_in_throttled";

/// An operator asked to reveal more KYC numbers than a day allows (`kyc::operators`): refused, and a person
/// should ask why.
pub const KYC_REVEAL_LIMIT: &str = "kyc_reveal_limit";

/// A data-rights request is within 5 days of its 30-day due date, or past it (`privacy::register`): raised by
/// every jobs run until it is answered.
pub const PRIVACY_REQUEST_DUE: &str = "privacy_request_due";

/// Every alert, each with its metric filter and alarm in template.yaml.
pub const ALL: [&str; 9] = [
    USAGE_OVER_HOLD,
    SETTLED_BY_SWEEPER,
    WEBHOOK_SIGNATURE_INVALID,
    PAYMENT_REVIEW,
    JOB_FAILED,
    KYC_PROVIDER_REFUSED,
    OPERATOR_SIGN_IN_THROTTLED,
    KYC_REVEAL_LIMIT,
    PRIVACY_REQUEST_DUE,
];

#[cfg(test)]
mod tests {
    /// Every alert constant of this file is in [`super::ALL`] (the template's check reads the constants).
    #[test]
    fn every_alert_is_listed() {
        let source = include_str!("alerts.rs");
        let declared = source.lines().filter(|l| l.starts_with("pub const ") && l.contains(": &str = ")).count();
        assert_eq!(declared, super::ALL.len());
        let mut names = super::ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), super::ALL.len(), "no alert twice");
    }
}
