//! The customer's billing profile: the name and address tax documents are issued to, the state that makes the
//! place of supply (CGST + SGST inside our state, IGST outside: IGST Act s.12(2)), and for a business the
//! GSTIN its KYC verified (CGST Rules, rule 46(d): a B2B invoice carries the recipient's GSTIN and name).
//! Editable; each tax document keeps a copy of the profile it was issued under.
//!
//! Item: main `USER#<id>` / `BILLING`, written only here; erased when the account closes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::accounts::{AccountStatus, AccountStore, KycStatus, timestamp, user_pk};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::kyc::documents::Gstin;
use crate::kyc::{Holder, KycStore};
use crate::store::schema::sk;
use crate::store::{Condition, Delete, Item, ItemStore, Put, StoreError, Table, WriteOp};

const BILLING_SK: &str = sk::BILLING;
const MAX_NAME_CHARS: usize = 100;
const MAX_ADDRESS_CHARS: usize = 300;

/// The states and union territories of the GST state codes a place of supply can be (GSTN's list; 25 and
/// 28, merged or replaced, and 99, the Centre's jurisdiction, are no place of supply).
pub const GST_STATES: [(&str, &str); 37] = [
    ("01", "Jammu and Kashmir"),
    ("02", "Himachal Pradesh"),
    ("03", "Punjab"),
    ("04", "Chandigarh"),
    ("05", "Uttarakhand"),
    ("06", "Haryana"),
    ("07", "Delhi"),
    ("08", "Rajasthan"),
    ("09", "Uttar Pradesh"),
    ("10", "Bihar"),
    ("11", "Sikkim"),
    ("12", "Arunachal Pradesh"),
    ("13", "Nagaland"),
    ("14", "Manipur"),
    ("15", "Mizoram"),
    ("16", "Tripura"),
    ("17", "Meghalaya"),
    ("18", "Assam"),
    ("19", "West Bengal"),
    ("20", "Jharkhand"),
    ("21", "Odisha"),
    ("22", "Chhattisgarh"),
    ("23", "Madhya Pradesh"),
    ("24", "Gujarat"),
    ("26", "Dadra and Nagar Haveli and Daman and Diu"),
    ("27", "Maharashtra"),
    ("29", "Karnataka"),
    ("30", "Goa"),
    ("31", "Lakshadweep"),
    ("32", "Kerala"),
    ("33", "Tamil Nadu"),
    ("34", "Puducherry"),
    ("35", "Andaman and Nicobar Islands"),
    ("36", "Telangana"),
    ("37", "Andhra Pradesh"),
    ("38", "Ladakh"),
    ("97", "Other Territory"),
];

/// The name of a GST state code, if it is a place of supply.
pub fn state_name(code: &str) -> Option<&'static str> {
    GST_STATES.iter().find(|(c, _)| *c == code).map(|(_, name)| *name)
}

/// The body of `PUT /v1/account/billing-profile`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingProfileRequest {
    pub billing_name: String,
    pub address: String,
    pub state_code: String,
    pub pin: String,
    pub gstin: Option<String>,
}

/// The stored profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingProfile {
    pub user_id: String,
    pub billing_name: String,
    pub address: String,
    pub state_code: String,
    pub pin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gstin: Option<String>,
    /// The GSTIN's legal name, as GSTN holds it (from the business's KYC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_name: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// What `GET` and `PUT /v1/account/billing-profile` answer.
#[derive(Debug, Clone, Serialize)]
pub struct BillingProfileView {
    pub billing_name: String,
    pub address: String,
    pub state_code: String,
    pub state: &'static str,
    pub pin: String,
    pub gstin: Option<String>,
    pub legal_name: Option<String>,
    pub updated_at: String,
}

impl From<&BillingProfile> for BillingProfileView {
    fn from(p: &BillingProfile) -> Self {
        Self {
            billing_name: p.billing_name.clone(),
            address: p.address.clone(),
            state_code: p.state_code.clone(),
            state: state_name(&p.state_code).unwrap_or_default(),
            pin: p.pin.clone(),
            gstin: p.gstin.clone(),
            legal_name: p.legal_name.clone(),
            updated_at: timestamp(p.updated_at),
        }
    }
}

fn printable(raw: &str, max: usize, field: &str, code: ErrorCode, what: &str) -> ApiResult<String> {
    crate::accounts::printable(raw, max).map(str::to_owned).ok_or_else(|| {
        ApiError::invalid(code, field, format!("{field} must be {what} (1 to {max} printable characters)"))
    })
}

fn check_state(raw: &str) -> ApiResult<String> {
    let code = raw.trim();
    state_name(code).map(|_| code.to_owned()).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::InvalidStateCode,
            "state_code",
            "state_code must be a two-digit GST state code of a state or union territory (e.g. 29 for Karnataka)",
        )
    })
}

fn check_pin(raw: &str) -> ApiResult<String> {
    let pin = raw.trim();
    let valid = pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()) && !pin.starts_with('0');
    valid
        .then(|| pin.to_owned())
        .ok_or_else(|| ApiError::invalid(ErrorCode::InvalidPin, "pin", "pin must be a six-digit PIN code"))
}

/// The GSTIN a profile may carry: the one the account's business KYC verified, registered in the profile's
/// state (an invoice's recipient GSTIN is what the buyer claims input tax credit with, so never one typed
/// in unverified). `None` for a person's account; required for a verified business.
async fn check_gstin(
    store: &dyn ItemStore,
    user_id: &str,
    raw: Option<&str>,
    state_code: &str,
) -> ApiResult<(Option<String>, Option<String>)> {
    let record = store.kyc_record(user_id).await?;
    let business = record.filter(|r| r.holder == Holder::Business && r.status == KycStatus::Verified);
    let verified = business.as_ref().and_then(|r| r.gstin.as_ref());
    // Null or absent: none given; anything else, even empty, must be a GSTIN.
    let given = raw.map(Gstin::parse).transpose()?;
    let invalid = |why: &str| ApiError::invalid(ErrorCode::InvalidGstin, "gstin", why);
    let gstin = match (given, verified) {
        (None, None) => return Ok((None, None)),
        (Some(_), None) => {
            return Err(invalid("a GSTIN goes on tax invoices once the business is verified with it (POST /v1/kyc)"));
        }
        (Some(g), Some(v)) if g.as_str() != v.gstin => {
            return Err(invalid("gstin must be the GSTIN your KYC verified"));
        }
        (_, Some(v)) => v,
    };
    if gstin.gstin.get(..2) != Some(state_code) {
        return Err(invalid(
            "a business is billed in the state its GSTIN is registered in: state_code must be its first two digits",
        ));
    }
    Ok((Some(gstin.gstin.clone()), gstin.legal_name().map(str::to_owned)))
}

/// The account's profile, if it has one.
pub async fn profile(store: &dyn ItemStore, user_id: &str) -> ApiResult<Option<BillingProfile>> {
    Ok(store.get(Table::Main, &user_pk(user_id), BILLING_SK).await?.map(|i| i.record()).transpose()?)
}

/// `PUT /v1/account/billing-profile`: validates and stores the profile (replacing the last one). Only for an
/// open account.
pub async fn put_profile(
    store: &dyn ItemStore,
    user_id: &str,
    request: BillingProfileRequest,
    now: DateTime<Utc>,
) -> ApiResult<BillingProfile> {
    let billing_name = printable(
        &request.billing_name,
        MAX_NAME_CHARS,
        "billing_name",
        ErrorCode::InvalidBillingName,
        "the name to bill",
    )?;
    let address =
        printable(&request.address, MAX_ADDRESS_CHARS, "address", ErrorCode::InvalidAddress, "the billing address")?;
    let state_code = check_state(&request.state_code)?;
    let pin = check_pin(&request.pin)?;
    let open = store.account(user_id).await?.is_some_and(|a| a.status == AccountStatus::Active);
    if !open {
        return Err(ApiError::unauthenticated(ErrorCode::InvalidSession, "the account is closed"));
    }
    let (gstin, legal_name) = check_gstin(store, user_id, request.gstin.as_deref(), &state_code).await?;
    let profile = BillingProfile {
        user_id: user_id.to_owned(),
        billing_name,
        address,
        state_code,
        pin,
        gstin,
        legal_name,
        updated_at: now,
    };
    let item = Item::from_record(user_pk(user_id), BILLING_SK, &profile, None)?;
    // Written only while the account is open: a profile racing the closure would outlive it.
    let ops = vec![
        WriteOp::Put(Put { table: Table::Main, item, condition: Condition::Always }),
        crate::accounts::require_active(user_id),
    ];
    match store.transact(ops).await {
        Ok(()) => Ok(profile),
        Err(StoreError::ConditionFailed) => {
            Err(ApiError::unauthenticated(ErrorCode::InvalidSession, "the account is closed"))
        }
        Err(e) => Err(e.into()),
    }
}

/// The closure's follow-up: the profile goes (the documents issued keep their own copy).
pub fn erase_at_closure(user_id: &str) -> WriteOp {
    WriteOp::Delete(Delete {
        table: Table::Main,
        pk: user_pk(user_id),
        sk: BILLING_SK.into(),
        condition: Condition::Always,
    })
}

/// The profile as the data export shows it.
pub async fn export_for(store: &dyn ItemStore, user_id: &str) -> ApiResult<serde_json::Value> {
    Ok(match profile(store, user_id).await? {
        Some(p) => json!(BillingProfileView::from(&p)),
        None => serde_json::Value::Null,
    })
}
