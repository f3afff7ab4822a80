//! Who owns each stored item: the one module that spells its key (through `schema`), reads it raw and writes
//! it; every other module asks the owner (`accounts::consents`, `kyc::retained_until`, `wallet::export_for`,
//! `auth::after_closure`, ...). `shared/tests/key_literals.rs` reads this table and fails when a key's constant
//! or builder is named outside its owner, or when a key of `schema` has no owner here.

/// Each key of `schema` (its constant or builder, as code names it) and the modules that own it. A sort key
/// shared by items of several partitions (`TOKEN`, `WINDOW`) has one owner per partition.
pub const OWNERS: &[(&str, &[&str])] = &[
    // Sort keys.
    ("sk::PROFILE", &["accounts"]),
    ("sk::EMAIL", &["accounts"]),
    ("sk::KYC", &["kyc"]),
    ("sk::CLAIM", &["kyc"]),
    ("sk::SECRET", &["kyc"]),
    ("sk::WALLET", &["wallet"]),
    ("sk::SESSION", &["auth"]),
    ("sk::KEY", &["keys"]),
    ("sk::WINDOW", &["auth", "kyc", "verification"]),
    ("sk::TOPUP", &["wallet"]),
    ("sk::ORDER", &["wallet"]),
    ("sk::CREDIT", &["wallet"]),
    ("sk::DEBIT", &["wallet"]),
    ("sk::EVENT", &["wallet"]),
    ("sk::DISPUTE", &["wallet"]),
    ("sk::CURSOR", &["wallet", "kyc"]),
    ("sk::ATTEMPT", &["kyc"]),
    ("sk::TOTAL", &["spend"]),
    ("sk::LIMIT", &["account_limits"]),
    ("sk::TOKEN", &["links", "notifications"]),
    ("sk::SENT", &["notifications"]),
    ("sk::SUPPRESSED", &["notifications"]),
    ("sk::COMPLETE", &["notifications"]),
    // Sort-key prefixes in a user's partition.
    ("prefix::CONSENT", &["accounts"]),
    ("prefix::SESSION", &["auth"]),
    ("prefix::LOGIN", &["auth"]),
    ("prefix::KYC_DECISION", &["kyc"]),
    ("prefix::KYC_CONSENT", &["kyc"]),
    ("prefix::LEDGER", &["wallet"]),
    ("prefix::TOPUP", &["wallet"]),
    ("prefix::PENDING", &["wallet"]),
    ("prefix::CLOSURE_REFUND", &["wallet"]),
    ("prefix::PAYMENT_INDEX", &["wallet"]),
    ("prefix::CALL_BEAT", &["wallet"]),
    ("prefix::PURSE", &["wallet"]),
    ("prefix::SPEND_ALERT", &["spend"]),
    ("prefix::SLOT", &["inference"]),
    ("prefix::DAY", &["spend"]),
    ("prefix::MONTH", &["spend"]),
    ("prefix::API_KEY_SLOT", &["keys"]),
    ("prefix::USAGE", &["usage"]),
    ("prefix::PRIVACY_REQUEST", &["privacy"]),
    ("prefix::EXPORT", &["privacy"]),
    // Singleton partitions.
    ("ACCOUNTS_PK", &["accounts"]),
    ("KYC_QUEUE_PK", &["kyc"]),
    ("KYC_RETRY_PK", &["kyc"]),
    ("AADHAAR_ERASURE_PK", &["kyc"]),
    ("WALLETS_PK", &["wallet"]),
    ("OPEN_TOPUPS_PK", &["wallet"]),
    ("PAYMENT_REVIEWS_PK", &["wallet"]),
    ("REFUND_REQUESTS_PK", &["wallet"]),
    ("DISPUTES_PK", &["wallet"]),
    ("REFUNDS_DUE_PK", &["wallet"]),
    ("SWEEPER_PK", &["wallet"]),
    ("PENDING_CLOSURES_PK", &["privacy"]),
    ("OUTBOX_PK", &["notifications"]),
    // Partition builders.
    ("email_pk", &["accounts"]),
    ("session_pk", &["auth"]),
    ("logins_pk", &["auth"]),
    ("login_window_pk", &["auth"]),
    ("api_key_pk", &["keys"]),
    ("rate_window_pk", &["keys"]),
    ("key_spend_pk", &["spend"]),
    ("in_flight_pk", &["inference"]),
    ("account_spend_pk", &["spend", "account_limits"]),
    ("kyc_submissions_pk", &["kyc"]),
    ("kyc_claim_pk", &["kyc"]),
    ("kyc_digilocker_pk", &["kyc"]),
    ("kyc_digilocker_starts_pk", &["kyc"]),
    ("vault_pk", &["kyc"]),
    ("topup_pk", &["wallet"]),
    ("order_pk", &["wallet"]),
    ("payment_pk", &["wallet"]),
    ("refund_pk", &["wallet"]),
    ("event_pk", &["wallet"]),
    ("dispute_pk", &["wallet"]),
    ("email_token_pk", &["links"]),
    ("reset_token_pk", &["links"]),
    ("unsubscribe_pk", &["notifications"]),
    ("mail_sent_pk", &["notifications"]),
    ("suppressed_pk", &["notifications"]),
    ("notice_pk", &["notifications"]),
    ("rate_pk", &["verification"]),
];

/// What every module may use: the user partition (shared by its owners' items, each under its own sort key)
/// and the sort-key makers.
pub const SHARED: &[&str] = &["user_pk", "user_id_of", "prefixed", "time_sort_key"];

/// Modules that name every key without owning one: the store itself, retention (which classifies every item
/// by its key, `ItemClass::of`) and the test support.
pub const READ_ALL: &[&str] = &["store", "retention", "testing"];
