//! `PATCH /v1/keys/{key_id}`: a key's name and the models it may call, changed on both of its items at once.
//! Inference caches a key's owner for up to a minute (its key cache), so a change reaches every
//! instance within that time, as a revocation does.

use serde_json::{Map, Value};

use super::{ApiKeyView, KeyStore, checked_name, find_key};
use crate::catalog::Catalog;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::Conditional;

/// What a PATCH changes: each field present is set (`allowed_models: null` lifts the restriction).
#[derive(Debug, Default)]
pub struct KeyChanges {
    name: Option<String>,
    allowed_models: Option<Option<Vec<String>>>,
}

impl KeyChanges {
    /// Reads a PATCH body: an object of `name` and `allowed_models` only, at least one of them.
    pub fn from_body(body: &Value) -> ApiResult<Self> {
        let fields = body.as_object().ok_or_else(|| ApiError::InvalidRequest {
            code: ErrorCode::InvalidJson,
            message: "request body must be a JSON object".into(),
            param: None,
        })?;
        if let Some(unknown) = fields.keys().find(|k| !["name", "allowed_models"].contains(&k.as_str())) {
            return Err(ApiError::invalid(
                ErrorCode::UnknownField,
                unknown,
                format!("{unknown} is not a field of a key; editable: name, allowed_models"),
            ));
        }
        let changes = Self { name: name_of(fields)?, allowed_models: models_of(fields)? };
        if changes.name.is_none() && changes.allowed_models.is_none() {
            return Err(ApiError::invalid(ErrorCode::NothingToChange, "name", "send name or allowed_models"));
        }
        Ok(changes)
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

/// Applies the changes to one of the user's keys and returns it as listed.
pub async fn change_key<S: KeyStore + ?Sized>(
    store: &S,
    user_id: &str,
    key_id: &str,
    changes: KeyChanges,
) -> ApiResult<ApiKeyView> {
    let (slot, mut record) = find_key(store, user_id, key_id).await?;
    if let Some(name) = changes.name {
        record.name = name;
    }
    if let Some(models) = changes.allowed_models {
        record.allowed_models = models;
    }
    // The key was revoked (or expired) meanwhile: as absent as if it had gone first.
    store
        .update_key(user_id, &slot, &record)
        .await
        .applied()?
        .ok_or_else(|| ApiError::NotFound { code: ErrorCode::KeyNotFound, message: format!("no API key {key_id}") })?;
    Ok(ApiKeyView::from(&record))
}
