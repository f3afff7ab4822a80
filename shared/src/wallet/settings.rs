//! `GET` and `PATCH /v1/wallet`: the wallet as the account sees it, with its own settings (the low-balance
//! alert threshold, the account's monthly spend limit) and what the account spent this month under it.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{WalletStore, WalletView, set_low_balance_threshold};
use crate::account_limits::{self, LimitChange};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::spend;
use crate::store::ItemStore;

/// The fields a PATCH may set.
const EDITABLE: [&str; 2] = ["low_balance_threshold_paise", "monthly_spend_limit_paise"];

/// What a `PATCH /v1/wallet` changes: each field present is set (`monthly_spend_limit_paise: null` lifts
/// the limit).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WalletSettings {
    low_balance_threshold_paise: Option<i64>,
    monthly_spend_limit_paise: Option<Option<i64>>,
}

impl WalletSettings {
    /// Reads a PATCH body: an object of the editable fields only, at least one of them.
    pub fn from_body(body: &Value) -> ApiResult<Self> {
        let fields = crate::body::editable_fields(body, &EDITABLE, "a setting of the wallet")?;
        Ok(Self {
            low_balance_threshold_paise: threshold_of(fields)?,
            monthly_spend_limit_paise: monthly_limit_of(fields)?,
        })
    }
}

fn threshold_of(fields: &Map<String, Value>) -> ApiResult<Option<i64>> {
    let max = super::MAX_LOW_BALANCE_THRESHOLD_PAISE;
    match fields.get("low_balance_threshold_paise") {
        None => Ok(None),
        // Checked here, before any setting is written: a PATCH applies whole or not at all.
        Some(value) => value.as_i64().filter(|paise| (0..=max).contains(paise)).map(Some).ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::InvalidThreshold,
                "low_balance_threshold_paise",
                format!(
                    "low_balance_threshold_paise must be an integer from 0 to {}",
                    super::MAX_LOW_BALANCE_THRESHOLD_PAISE
                ),
            )
        }),
    }
}

fn monthly_limit_of(fields: &Map<String, Value>) -> ApiResult<Option<Option<i64>>> {
    let field = "monthly_spend_limit_paise";
    fields.get(field).map(|value| spend::read_paise(field, value)).transpose()
}

/// Applies the settings, then shows the wallet.
pub async fn change_settings(
    store: &dyn ItemStore,
    user_id: &str,
    settings: WalletSettings,
    now: DateTime<Utc>,
) -> ApiResult<WalletView> {
    if let Some(limit) = settings.monthly_spend_limit_paise {
        account_limits::change_account_limits(store, user_id, &[LimitChange::MonthlySpend(limit)]).await?;
    }
    if let Some(paise) = settings.low_balance_threshold_paise {
        set_low_balance_threshold(store, user_id, paise).await?;
    }
    wallet_view(store, user_id, now).await
}

/// The wallet as `GET /v1/wallet` shows it.
pub async fn wallet_view(store: &dyn ItemStore, user_id: &str, now: DateTime<Utc>) -> ApiResult<WalletView> {
    let mut view = WalletView::from(store.wallet(user_id).await?);
    let limit = account_limits::account_limits(store, user_id).await?.monthly_spend;
    view.monthly_spend_limit_paise = limit;
    view.monthly_spend_paise = spend::account_spend(store, user_id, limit, now).await?;
    Ok(view)
}
