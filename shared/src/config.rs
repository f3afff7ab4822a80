//! Configuration from environment variables, read once per cold start. Every value has a default taken
//! from the published policy, so `make run` needs none of them; docs/operations.md lists them all.

use std::str::FromStr;

use chrono::Duration;

pub use crate::env::{ConfigError, var};
use crate::retention::Retention;
use crate::secrets::SecretString;

/// The published privacy policy's version (its date); signups must accept exactly this version.
pub const DEFAULT_POLICY_VERSION: &str = "2026-12-06";

#[derive(Debug, Clone)]
pub struct Config {
    /// `INFEREX_POLICY_VERSION`: the terms/privacy policy version a signup must accept.
    pub policy_version: String,
    /// `INFEREX_SESSION_TTL_SECONDS`: how long a dashboard session lasts (default 7 days).
    pub session_ttl: Duration,
    /// `INFEREX_LOGIN_MAX_FAILURES`: failed logins per email tolerated within the window (default 5).
    pub login_max_failures: u32,
    /// `INFEREX_LOGIN_WINDOW_SECONDS`: the throttling window (default 15 minutes).
    pub login_window: Duration,
    /// `INFEREX_LOGIN_CHECKS_PER_ADDRESS`: failed password checks one client address (IPv4, or IPv6 /64) may
    /// make in an hour across every e-mail address (default 30).
    pub login_checks_per_address: u32,
    /// `INFEREX_TRUST_X_FORWARDED_FOR`: take the client IP from X-Forwarded-For (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// `KYC_MODE`: `auto` (valid and unique submissions are verified at once; the local default) or
    /// `manual` (submissions wait for an operator's decision).
    pub kyc_mode: KycMode,
    /// `INFEREX_ADMIN_TOKEN` (local runs only): the operators' credentials, a JSON object of each operator's
    /// name to `{"token", "roles"}`, each token at least 32 characters; the operator endpoints answer 404
    /// while it is unset. In AWS it is a Secrets Manager secret.
    pub admin_token: Option<SecretString>,
    /// `INFEREX_OPERATOR_NETWORKS`: the networks operators may work from, comma-separated CIDR blocks
    /// (`203.0.113.0/24,2001:db8:10::/48`); empty: anywhere. Checked on the caller's address as
    /// `ClientInfo` has it (behind CloudFront the browser's, proven by the edge secret).
    pub operator_networks: Vec<ipnet::IpNet>,
    /// `INFEREX_TOPUP_MIN_PAISE` / `INFEREX_TOPUP_MAX_PAISE`: accepted top-up amounts (₹100 to ₹5,00,000).
    pub topup_min_paise: i64,
    pub topup_max_paise: i64,
    /// Every retention window ([`crate::retention`]; each overridable by its own variable).
    pub retention: Retention,
    /// `INFEREX_GRIEVANCE_NAME` / `INFEREX_GRIEVANCE_EMAIL`: the grievance officer `GET /v1/privacy` names
    /// (DPDP Act), defaulting to the published policy's contact.
    pub grievance_name: String,
    pub grievance_email: String,
    /// `INFEREX_PRIVACY_EMAIL` / `INFEREX_SECURITY_EMAIL`: where data-rights requests and security reports
    /// go, as the published policy names them.
    pub privacy_email: String,
    pub security_email: String,
    /// `INFEREX_POLICY_EFFECTIVE_DATE`: when the policy version in force takes effect, as the policy update
    /// notice states it (default: the version itself, which is its date).
    pub policy_effective_date: String,
    /// `INFEREX_PUBLIC_URL`: the dashboard's address, where every link in an e-mail points (under `make run`,
    /// the local server's own address).
    pub public_url: String,
    /// `INFEREX_MAIL_FROM`: the sender of every e-mail (an SES-verified identity in AWS).
    pub mail_from: String,
    /// `INFEREX_CALLS_IN_FLIGHT_PER_ACCOUNT`: how many inference calls one account may run at once, unless
    /// operators set its own (absent or 0: no limit; the template sets a share of the inference function's
    /// reserved concurrency).
    pub calls_in_flight_per_account: Option<u64>,
    /// `INFEREX_SUPPLIER_*`: who we are on every tax document; absent until configured (functions that issue
    /// documents refuse to start without it; `make run` uses [`Supplier::sample`]).
    pub supplier: Option<Supplier>,
}

/// Our side as the supplier on tax documents (CGST Rules 46, 50, 51: the supplier's name, address and GSTIN),
/// configured per deploy. Public facts, not secrets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Supplier {
    /// `INFEREX_SUPPLIER_LEGAL_NAME`: the legal name as registered with GSTN.
    pub legal_name: String,
    /// `INFEREX_SUPPLIER_GSTIN`: the GSTIN of the registration that supplies the service.
    pub gstin: String,
    /// `INFEREX_SUPPLIER_ADDRESS`: the principal place of business of that registration.
    pub address: String,
    /// The two-digit state code, the GSTIN's first two digits: a customer billed in it pays CGST + SGST,
    /// anyone else IGST.
    pub state_code: String,
    /// `INFEREX_SUPPLIER_SIGNATORY`: the signature line (rules 46(q), 50(k): signature or digital signature
    /// of the supplier or its authorised representative).
    pub signatory: String,
}

impl Supplier {
    /// `make run`'s supplier: a company registered in Karnataka (state code 29).
    pub fn sample() -> Self {
        Self {
            legal_name: "InferexAI Technologies Private Limited".into(),
            gstin: "29AAICI1234F1ZQ".into(),
            address: "4th Floor, 100 Feet Road, Indiranagar, Bengaluru, Karnataka 560038".into(),
            state_code: "29".into(),
            signatory: "Authorised Signatory, InferexAI Technologies Private Limited".into(),
        }
    }

    /// All four variables, or none (then `None`); a GSTIN that is not 15 capital letters and digits is refused
    /// here, its check character where the functions start (`AppState::require`).
    fn from_env() -> Result<Option<Self>, ConfigError> {
        let names = [
            "INFEREX_SUPPLIER_LEGAL_NAME",
            "INFEREX_SUPPLIER_GSTIN",
            "INFEREX_SUPPLIER_ADDRESS",
            "INFEREX_SUPPLIER_SIGNATORY",
        ];
        let mut values = Vec::new();
        for name in names {
            values.push(var::<String>(name)?.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()));
        }
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut given = Vec::new();
        for (name, value) in names.iter().zip(values) {
            given.push(value.ok_or_else(|| ConfigError {
                name: (*name).to_owned(),
                reason: "the supplier is configured by all of INFEREX_SUPPLIER_LEGAL_NAME, _GSTIN, _ADDRESS and _SIGNATORY".into(),
            })?);
        }
        let [legal_name, gstin, address, signatory]: [String; 4] = given.try_into().map_err(|_| ConfigError {
            name: "INFEREX_SUPPLIER_GSTIN".into(),
            reason: "unreadable supplier configuration".into(),
        })?;
        let gstin = gstin.to_ascii_uppercase();
        if gstin.len() != 15 || !gstin.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return Err(ConfigError {
                name: "INFEREX_SUPPLIER_GSTIN".into(),
                reason: "must be a 15-character GSTIN".into(),
            });
        }
        let state_code = gstin[..2].to_owned();
        Ok(Some(Self { legal_name, gstin, address, state_code, signatory }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KycMode {
    Auto,
    Manual,
}

impl FromStr for KycMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(KycMode::Auto),
            "manual" => Ok(KycMode::Manual),
            other => Err(format!("expected auto or manual, got {other:?}")),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy_version: DEFAULT_POLICY_VERSION.to_owned(),
            session_ttl: Duration::days(7),
            login_max_failures: 5,
            login_checks_per_address: 30,
            login_window: Duration::minutes(15),
            trust_forwarded_for: false,
            kyc_mode: KycMode::Auto,
            admin_token: None,
            operator_networks: Vec::new(),
            topup_min_paise: 10_000,     // ₹100
            topup_max_paise: 50_000_000, // ₹5,00,000
            retention: Retention::default(),
            grievance_name: "Grievance Officer, InferexAI".to_owned(),
            // The published policy's domain.
            grievance_email: "grievance@inferexai.in".to_owned(),
            privacy_email: "privacy@inferexai.in".to_owned(),
            security_email: "security@inferexai.in".to_owned(),
            policy_effective_date: DEFAULT_POLICY_VERSION.to_owned(),
            public_url: "http://127.0.0.1:8080".to_owned(),
            mail_from: "InferexAI <no-reply@inferexai.in>".to_owned(),
            calls_in_flight_per_account: None,
            supplier: None,
        }
    }
}

/// Comma-separated CIDR blocks (`203.0.113.0/24, 2001:db8::/48`); unset or blank: none.
pub fn networks(name: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let raw = var::<String>(name)?.unwrap_or_default();
    raw.split(',')
        .map(str::trim)
        .filter(|block| !block.is_empty())
        .map(|block| {
            block.parse::<ipnet::IpNet>().map_err(|_| ConfigError {
                name: name.into(),
                reason: format!("{block:?} is not a CIDR block (like 203.0.113.0/24 or 2001:db8::/48)"),
            })
        })
        .collect()
}

fn positive_seconds(name: &str, default: Duration) -> Result<Duration, ConfigError> {
    match var::<i64>(name)? {
        Some(secs) if secs > 0 => Ok(Duration::seconds(secs)),
        Some(_) => Err(ConfigError { name: name.to_owned(), reason: "must be a positive number".into() }),
        None => Ok(default),
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let max_failures = match var::<u32>("INFEREX_LOGIN_MAX_FAILURES")? {
            Some(0) => {
                return Err(ConfigError {
                    name: "INFEREX_LOGIN_MAX_FAILURES".into(),
                    reason: "must be at least 1".into(),
                });
            }
            Some(n) => n,
            None => defaults.login_max_failures,
        };
        Ok(Self {
            policy_version: var::<String>("INFEREX_POLICY_VERSION")?.unwrap_or(defaults.policy_version),
            session_ttl: positive_seconds("INFEREX_SESSION_TTL_SECONDS", defaults.session_ttl)?,
            login_max_failures: max_failures,
            login_checks_per_address: match var::<u32>("INFEREX_LOGIN_CHECKS_PER_ADDRESS")? {
                Some(0) => {
                    return Err(ConfigError {
                        name: "INFEREX_LOGIN_CHECKS_PER_ADDRESS".into(),
                        reason: "must be at least 1".into(),
                    });
                }
                Some(n) => n,
                None => defaults.login_checks_per_address,
            },
            login_window: positive_seconds("INFEREX_LOGIN_WINDOW_SECONDS", defaults.login_window)?,
            trust_forwarded_for: var::<bool>("INFEREX_TRUST_X_FORWARDED_FOR")?.unwrap_or(false),
            kyc_mode: var::<KycMode>("KYC_MODE")?.unwrap_or(defaults.kyc_mode),
            admin_token: match var::<String>("INFEREX_ADMIN_TOKEN")? {
                Some(raw) => {
                    crate::operators::OperatorCredentials::parse("INFEREX_ADMIN_TOKEN", &raw)
                        .map_err(|e| ConfigError { name: "INFEREX_ADMIN_TOKEN".into(), reason: e.to_string() })?;
                    Some(SecretString::new(raw.trim()))
                }
                None => None,
            },
            operator_networks: networks("INFEREX_OPERATOR_NETWORKS")?,
            topup_min_paise: var::<i64>("INFEREX_TOPUP_MIN_PAISE")?.unwrap_or(defaults.topup_min_paise),
            topup_max_paise: var::<i64>("INFEREX_TOPUP_MAX_PAISE")?.unwrap_or(defaults.topup_max_paise),
            retention: Retention::from_env()?,
            grievance_name: var::<String>("INFEREX_GRIEVANCE_NAME")?.unwrap_or(defaults.grievance_name),
            grievance_email: var::<String>("INFEREX_GRIEVANCE_EMAIL")?.unwrap_or(defaults.grievance_email),
            privacy_email: var::<String>("INFEREX_PRIVACY_EMAIL")?.unwrap_or(defaults.privacy_email),
            security_email: var::<String>("INFEREX_SECURITY_EMAIL")?.unwrap_or(defaults.security_email),
            policy_effective_date: var::<String>("INFEREX_POLICY_EFFECTIVE_DATE")?
                .or_else(|| std::env::var("INFEREX_POLICY_VERSION").ok())
                .unwrap_or(defaults.policy_effective_date),
            public_url: var::<String>("INFEREX_PUBLIC_URL")?.unwrap_or(defaults.public_url),
            mail_from: var::<String>("INFEREX_MAIL_FROM")?.unwrap_or(defaults.mail_from),
            calls_in_flight_per_account: var::<u64>("INFEREX_CALLS_IN_FLIGHT_PER_ACCOUNT")?.filter(|n| *n > 0),
            supplier: Supplier::from_env()?,
        })
    }
}
