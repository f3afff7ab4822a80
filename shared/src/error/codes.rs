//! The catalogue of error codes: every `code` the API answers with, its HTTP status and (from the status)
//! its OpenAI error `type`. `openapi.yaml` lists the same codes under `x-error-codes`; a contract test keeps
//! the two equal, so a client can rely on the list.

use axum::http::StatusCode;

macro_rules! catalogue {
    ($($name:ident = $code:literal, $status:ident;)*) => {
        /// One error code of the API. The status of an [`crate::error::ApiError`] follows its code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($name,)*
        }

        impl ErrorCode {
            /// Every code, in the catalogue's order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The code as the client sees it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $code,)*
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$name => StatusCode::$status,)*
                }
            }
        }
    };
}

catalogue! {
    AmountOutOfRange = "amount_out_of_range", BAD_REQUEST;
    ConflictingMaxTokens = "conflicting_max_tokens", BAD_REQUEST;
    ContextLengthExceeded = "context_length_exceeded", BAD_REQUEST;
    AadhaarNotAccepted = "aadhaar_not_accepted", BAD_REQUEST;
    ConsentRequired = "consent_required", BAD_REQUEST;
    InvalidGstin = "invalid_gstin", BAD_REQUEST;
    InvalidAllowedModels = "invalid_allowed_models", BAD_REQUEST;
    InvalidDataResidency = "invalid_data_residency", BAD_REQUEST;
    ResidencyUnavailable = "residency_unavailable", BAD_REQUEST;
    InvalidAddress = "invalid_address", BAD_REQUEST;
    InvalidAmount = "invalid_amount", BAD_REQUEST;
    InvalidBillingName = "invalid_billing_name", BAD_REQUEST;
    InvalidRateLimits = "invalid_rate_limits", BAD_REQUEST;
    InvalidSpendLimits = "invalid_spend_limits", BAD_REQUEST;
    RequestExceedsRateLimit = "request_exceeds_rate_limit", BAD_REQUEST;
    InvalidCampaign = "invalid_campaign", BAD_REQUEST;
    InvalidCursor = "invalid_cursor", BAD_REQUEST;
    InvalidDateOfBirth = "invalid_date_of_birth", BAD_REQUEST;
    InvalidDecision = "invalid_decision", BAD_REQUEST;
    InvalidEmail = "invalid_email", BAD_REQUEST;
    InvalidExpiresAt = "invalid_expires_at", BAD_REQUEST;
    InvalidFullName = "invalid_full_name", BAD_REQUEST;
    InvalidGroupBy = "invalid_group_by", BAD_REQUEST;
    InvalidIncident = "invalid_incident", BAD_REQUEST;
    InvalidNominee = "invalid_nominee", BAD_REQUEST;
    InvalidPrivacyRequest = "invalid_privacy_request", BAD_REQUEST;
    InvalidJson = "invalid_json", BAD_REQUEST;
    InvalidLimit = "invalid_limit", BAD_REQUEST;
    InvalidMaxTokens = "invalid_max_tokens", BAD_REQUEST;
    InvalidName = "invalid_name", BAD_REQUEST;
    InvalidNameOnPan = "invalid_name_on_pan", BAD_REQUEST;
    InvalidNote = "invalid_note", BAD_REQUEST;
    InvalidPan = "invalid_pan", BAD_REQUEST;
    InvalidParameter = "invalid_parameter", BAD_REQUEST;
    InvalidPin = "invalid_pin", BAD_REQUEST;
    InvalidPeriod = "invalid_period", BAD_REQUEST;
    InvalidPrompt = "invalid_prompt", BAD_REQUEST;
    InvalidQuery = "invalid_query", BAD_REQUEST;
    InvalidReason = "invalid_reason", BAD_REQUEST;
    InvalidReference = "invalid_reference", BAD_REQUEST;
    InvalidSignature = "invalid_signature", BAD_REQUEST;
    InvalidStateCode = "invalid_state_code", BAD_REQUEST;
    InvalidThreshold = "invalid_threshold", BAD_REQUEST;
    InvalidTime = "invalid_time", BAD_REQUEST;
    InvalidToken = "invalid_token", BAD_REQUEST;
    InvalidType = "invalid_type", BAD_REQUEST;
    KycField = "kyc_field", BAD_REQUEST;
    MissingField = "missing_field", BAD_REQUEST;
    NotEditable = "not_editable", BAD_REQUEST;
    NothingToChange = "nothing_to_change", BAD_REQUEST;
    PaymentMismatch = "payment_mismatch", BAD_REQUEST;
    TermsNotAccepted = "terms_not_accepted", BAD_REQUEST;
    Underage = "underage", BAD_REQUEST;
    UnknownField = "unknown_field", BAD_REQUEST;
    UnsupportedParameter = "unsupported_parameter", BAD_REQUEST;
    UpstreamInvalidRequest = "upstream_invalid_request", BAD_REQUEST;
    WeakPassword = "weak_password", BAD_REQUEST;
    InvalidAdminToken = "invalid_admin_token", UNAUTHORIZED;
    InvalidOperatorSession = "invalid_operator_session", UNAUTHORIZED;
    InvalidTotpCode = "invalid_totp_code", UNAUTHORIZED;
    InvalidApiKey = "invalid_api_key", UNAUTHORIZED;
    InvalidCredentials = "invalid_credentials", UNAUTHORIZED;
    InvalidSession = "invalid_session", UNAUTHORIZED;
    MissingSession = "missing_session", UNAUTHORIZED;
    SessionRequired = "session_required", UNAUTHORIZED;
    InsufficientBalance = "insufficient_balance", PAYMENT_REQUIRED;
    CsrfTokenInvalid = "csrf_token_invalid", FORBIDDEN;
    RoleRequired = "role_required", FORBIDDEN;
    OperatorNetworkNotAllowed = "operator_network_not_allowed", FORBIDDEN;
    ModelNotAllowed = "model_not_allowed", FORBIDDEN;
    EmailNotVerified = "email_not_verified", FORBIDDEN;
    IncorrectPassword = "incorrect_password", FORBIDDEN;
    InvalidLink = "invalid_link", FORBIDDEN;
    KycRequired = "kyc_required", FORBIDDEN;
    DisputeNotFound = "dispute_not_found", NOT_FOUND;
    ExportNotFound = "export_not_found", NOT_FOUND;
    KeyNotFound = "key_not_found", NOT_FOUND;
    KycNotFound = "kyc_not_found", NOT_FOUND;
    IncidentNotFound = "incident_not_found", NOT_FOUND;
    NomineeNotFound = "nominee_not_found", NOT_FOUND;
    PrivacyRequestNotFound = "privacy_request_not_found", NOT_FOUND;
    MessageNotFound = "message_not_found", NOT_FOUND;
    ModelNotFound = "model_not_found", NOT_FOUND;
    NotFound = "not_found", NOT_FOUND;
    PaymentReviewNotFound = "payment_review_not_found", NOT_FOUND;
    RefundRequestNotFound = "refund_request_not_found", NOT_FOUND;
    SessionNotFound = "session_not_found", NOT_FOUND;
    TopupNotFound = "topup_not_found", NOT_FOUND;
    UnsupportedEndpoint = "unsupported_endpoint", NOT_FOUND;
    AccountNotFound = "account_not_found", NOT_FOUND;
    BillingProfileNotFound = "billing_profile_not_found", NOT_FOUND;
    TaxDocumentNotFound = "tax_document_not_found", NOT_FOUND;
    AccountChanged = "account_changed", CONFLICT;
    AccountClosed = "account_closed", CONFLICT;
    BillingProfileRequired = "billing_profile_required", CONFLICT;
    DisputeHandled = "dispute_handled", CONFLICT;
    EmailAlreadyVerified = "email_already_verified", CONFLICT;
    EmailTaken = "email_taken", CONFLICT;
    IncidentFull = "incident_full", CONFLICT;
    RunFinished = "run_finished", CONFLICT;
    KycAlreadyVerified = "kyc_already_verified", CONFLICT;
    KycDocumentInUse = "kyc_document_in_use", CONFLICT;
    KycNotPending = "kyc_not_pending", CONFLICT;
    KycNotVerifiable = "kyc_not_verifiable", CONFLICT;
    KycStepNotReady = "kyc_step_not_ready", CONFLICT;
    KycSubmissionConflict = "kyc_submission_conflict", CONFLICT;
    KycSubmissionLimit = "kyc_submission_limit", CONFLICT;
    PaymentReviewHandled = "payment_review_handled", CONFLICT;
    PrivacyRequestAnswered = "privacy_request_answered", CONFLICT;
    TooManyOpenRequests = "too_many_open_requests", CONFLICT;
    PayoutNotAllowedYet = "payout_not_allowed_yet", CONFLICT;
    RefundRequestChanged = "refund_request_changed", CONFLICT;
    TooManyKeys = "too_many_keys", CONFLICT;
    TotpAlreadyEnrolled = "totp_already_enrolled", CONFLICT;
    TotpNotEnrolled = "totp_not_enrolled", CONFLICT;
    KeyChanged = "key_changed", CONFLICT;
    WalletChanged = "wallet_changed", CONFLICT;
    TooManyAttempts = "too_many_attempts", TOO_MANY_REQUESTS;
    TooManyRequests = "too_many_requests", TOO_MANY_REQUESTS;
    ProviderRateLimited = "provider_rate_limited", TOO_MANY_REQUESTS;
    RateLimitExceeded = "rate_limit_exceeded", TOO_MANY_REQUESTS;
    SpendLimitReached = "spend_limit_reached", TOO_MANY_REQUESTS;
    RevealLimitReached = "reveal_limit_reached", TOO_MANY_REQUESTS;
    NoRoute = "no_route", BAD_GATEWAY;
    PaymentGatewayError = "payment_gateway_error", BAD_GATEWAY;
    UpstreamError = "upstream_error", BAD_GATEWAY;
    UpstreamModelUnavailable = "upstream_model_unavailable", BAD_GATEWAY;
    UpstreamUnavailable = "upstream_unavailable", BAD_GATEWAY;
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    PayloadTooLarge = "payload_too_large", PAYLOAD_TOO_LARGE;
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE;
    InternalError = "internal_error", INTERNAL_SERVER_ERROR;
    ServiceUnavailable = "service_unavailable", SERVICE_UNAVAILABLE;
    KycProviderUnavailable = "kyc_provider_unavailable", SERVICE_UNAVAILABLE;
    ModelOverloaded = "model_overloaded", SERVICE_UNAVAILABLE;
    UpstreamTimeout = "upstream_timeout", GATEWAY_TIMEOUT;
}

impl ErrorCode {
    /// OpenAI's error `type` vocabulary, which SDKs map to their exception classes.
    pub fn error_type(self) -> &'static str {
        // A spend limit is a quota, as OpenAI's own 429 for a used-up budget says.
        if self == ErrorCode::SpendLimitReached {
            return "insufficient_quota";
        }
        match self.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::PAYMENT_REQUIRED => "insufficient_quota",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            status if status.is_server_error() => "api_error",
            _ => "invalid_request_error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} is listed twice");
            assert!(code.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{code}");
        }
    }

    #[test]
    fn types_follow_statuses() {
        assert_eq!(ErrorCode::InsufficientBalance.error_type(), "insufficient_quota");
        assert_eq!(ErrorCode::InvalidApiKey.error_type(), "authentication_error");
        assert_eq!(ErrorCode::KeyNotFound.error_type(), "invalid_request_error");
        assert_eq!(ErrorCode::UpstreamTimeout.error_type(), "api_error");
        assert_eq!(ErrorCode::TooManyAttempts.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
