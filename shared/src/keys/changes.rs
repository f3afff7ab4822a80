//! `PATCH /v1/keys/{key_id}`: a key's name, the models it may call, its rate limits, its spend limits and
//! its data residency,
//! changed on both of its items at once.
//! Inference caches a key's owner for up to a minute (its key cache), so a change reaches every
//! instance within that time, as a revocation does.

use serde_json::{Map, Value};

use super::{ApiKeyRecord, KeyStore, RateLimits, checked_name, find_key};
use crate::catalog::Catalog;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::residency::DataResidency;
use crate::spend::SpendLimits;
use crate::store::Conditional;

/// What a PATCH changes: each field present is set (`allowed_models: null` and `rate_limits: null` lift
/// the limits).
#[derive(Debug, Default, Clone)]
pub struct KeyChanges {
    name: Option<String>,
    allowed_models: Option<Option<Vec<String>>>,
    rate_limits: Option<RateLimits>,
    spend_limits: Option<SpendLimits>,
    data_residency: Option<Option<DataResidency>>,
}

/// The fields a PATCH may set.
const EDITABLE: [&str; 5] = ["name", "allowed_models", "rate_limits", "spend_limits_paise", "data_residency"];

impl KeyChanges {
    fn apply(&self, record: &mut super::ApiKeyRecord) {
        if let Some(name) = &self.name {
            record.name.clone_from(name);
        }
        if let Some(models) = &self.allowed_models {
            record.allowed_models.clone_from(models);
        }
        if let Some(limits) = self.rate_limits {
            record.rate_limits = limits;
        }
        if let Some(limits) = self.spend_limits {
            record.spend_limits = limits;
        }
        if let Some(residency) = self.data_residency {
            record.data_residency = residency;
        }
    }

    /// Reads a PATCH body: an object of the editable fields only, at least one of them.
    pub fn from_body(body: &Value) -> ApiResult<Self> {
        let fields = crate::body::editable_fields(body, &EDITABLE, "a field of a key")?;
        Ok(Self {
            name: name_of(fields)?,
            allowed_models: models_of(fields)?,
            rate_limits: rates_of(fields)?,
            spend_limits: spend_of(fields)?,
            data_residency: fields
                .contains_key("data_residency")
                .then(|| residency_of(fields.get("data_residency")))
                .transpose()?,
        })
    }
}

/// A key's `data_residency`: `"in"`, `"any"`, or null (the account's).
pub(super) fn residency_of(value: Option<&Value>) -> ApiResult<Option<DataResidency>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => DataResidency::from_field(value, "data_residency").map(Some),
    }
}

fn name_of(fields: &Map<String, Value>) -> ApiResult<Option<String>> {
    match fields.get("name") {
        None => Ok(None),
        Some(Value::String(name)) => checked_name(name).map(Some),
        Some(_) => Err(ApiError::invalid(ErrorCode::InvalidType, "name", "name must be a string")),
    }
}

fn models_of(fields: &Map<String, Value>) -> ApiResult<Option<Option<Vec<String>>>> {
    let Some(value) = fields.get("allowed_models") else { return Ok(None) };
    let models = serde_json::from_value::<Option<Vec<String>>>(value.clone()).map_err(|_| {
        ApiError::invalid(
            ErrorCode::InvalidType,
            "allowed_models",
            "allowed_models must be a list of model ids or null",
        )
    })?;
    checked_models(models).map(Some)
}

fn rates_of(fields: &Map<String, Value>) -> ApiResult<Option<RateLimits>> {
    fields.get("rate_limits").map(|value| RateLimits::read("rate_limits", value)).transpose()
}

fn spend_of(fields: &Map<String, Value>) -> ApiResult<Option<SpendLimits>> {
    let Some(value) = fields.get("spend_limits_paise") else { return Ok(None) };
    let limits = serde_json::from_value::<Option<SpendLimits>>(value.clone()).map_err(|_| {
        ApiError::invalid(
            ErrorCode::InvalidSpendLimits,
            "spend_limits_paise",
            "spend_limits_paise must be an object of total, daily and monthly (integers of paise or null), or null",
        )
    })?;
    limits.unwrap_or_default().checked().map(Some)
}

/// A key's model list: `null` (every model) or model ids we serve, at least one, each once.
pub(super) fn checked_models(models: Option<Vec<String>>) -> ApiResult<Option<Vec<String>>> {
    let Some(models) = models else { return Ok(None) };
    let invalid = |message: String| ApiError::invalid(ErrorCode::InvalidAllowedModels, "allowed_models", message);
    if models.is_empty() {
        return Err(invalid("allowed_models must name at least one model, or be null for every model".into()));
    }
    let served: Vec<String> =
        Catalog::builtin().map_err(|e| ApiError::Internal(e.to_string()))?.models.into_iter().map(|m| m.id).collect();
    let mut kept: Vec<String> = Vec::new();
    for model in models {
        if !served.contains(&model) {
            return Err(invalid(format!(
                "allowed_models names a model we do not serve; models: {}",
                served.join(", ")
            )));
        }
        if !kept.contains(&model) {
            kept.push(model);
        }
    }
    Ok(Some(kept))
}

/// Applies the changes to one of the user's keys and returns it as stored.
pub async fn change_key<S: KeyStore + ?Sized>(
    store: &S,
    user_id: &str,
    key_id: &str,
    changes: KeyChanges,
) -> ApiResult<ApiKeyRecord> {
    // A change that meets another (or a revocation) reads the key again: nothing another change set is
    // undone, and a key revoked meanwhile is as absent as if it had gone first.
    for _ in 0..3 {
        let (slot, mut record) = find_key(store, user_id, key_id).await?;
        let read = record.revision;
        changes.apply(&mut record);
        record.revision = read + 1;
        if store.update_key(user_id, &slot, &record, read).await.applied()?.is_some() {
            return Ok(record);
        }
    }
    Err(ApiError::Conflict {
        code: ErrorCode::KeyChanged,
        message: "the key kept changing while this change was applied; retry".into(),
        param: None,
    })
}
