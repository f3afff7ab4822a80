//! Data residency: where a call's prompt may be processed. `in` keeps it to providers running in India (the
//! catalog's `providers`: country `IN`); `any` lets it go to every route. The account sets a default and each
//! key its own, and a request may narrow either (`x-inferex-data-residency: in`), never widen it: the
//! narrowest of the three applies, so a key cannot undo an account's `in`. A call under `in` with no India
//! route to take is refused (400 `residency_unavailable`) before any money moves; it is never sent abroad.
//! This is how the privacy notice's "within India where possible" becomes a promise a customer can demand
//! (DPDP Act, 2023, s.16: the transfer outside India is named in the notice, and can be refused).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::Catalog;
use crate::error::{ApiError, ApiResult, ErrorCode};

/// The request header that narrows a call to India.
pub const RESIDENCY_HEADER: &str = "x-inferex-data-residency";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataResidency {
    /// Every route, in India or abroad.
    #[default]
    Any,
    /// India-hosted routes only.
    In,
}

impl DataResidency {
    pub fn as_str(self) -> &'static str {
        match self {
            DataResidency::Any => "any",
            DataResidency::In => "in",
        }
    }

    /// The narrower of the two: `in` wins.
    pub fn narrowest(self, other: Self) -> Self {
        if self == DataResidency::In || other == DataResidency::In { DataResidency::In } else { DataResidency::Any }
    }

    /// Whether a call under this residency may go to `provider`.
    pub fn allows(self, catalog: &Catalog, provider: &str) -> bool {
        self == DataResidency::Any || catalog.in_india(provider)
    }

    fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "in" => Some(DataResidency::In),
            "any" => Some(DataResidency::Any),
            _ => None,
        }
    }

    /// A JSON field's value: `"in"` or `"any"` (400 `invalid_data_residency` naming `field` otherwise).
    pub fn from_field(value: &Value, field: &str) -> ApiResult<Self> {
        value.as_str().filter(|s| *s == s.trim()).and_then(Self::parse).ok_or_else(|| invalid(field))
    }

    /// The request's header, if it sent one: `in` or `any` (400 otherwise). `any` narrows nothing.
    pub fn from_header(value: Option<&str>) -> ApiResult<Option<Self>> {
        value.map(|v| Self::parse(v).ok_or_else(|| invalid(RESIDENCY_HEADER))).transpose()
    }
}

fn invalid(field: &str) -> ApiError {
    ApiError::invalid(ErrorCode::InvalidDataResidency, field, format!("{field} must be \"in\" or \"any\""))
}

/// 400 `residency_unavailable`: the model has no India-hosted route to take right now.
pub fn unavailable(model_id: &str, india_models: &[&str]) -> ApiError {
    let others = if india_models.is_empty() { "none".to_owned() } else { india_models.join(", ") };
    ApiError::invalid(
        ErrorCode::ResidencyUnavailable,
        "model",
        format!(
            "{model_id} cannot be served in India right now, and this call may only be processed in India (data_residency \"in\"); models served in India: {others}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_request_can_narrow_but_never_widen() {
        use DataResidency::{Any, In};
        assert_eq!(Any.narrowest(In), In);
        assert_eq!(In.narrowest(Any), In, "a key's or a header's any does not undo an in");
        assert_eq!(Any.narrowest(Any), Any);
    }

    #[test]
    fn only_in_and_any_are_accepted() {
        assert_eq!(DataResidency::from_field(&json!("in"), "data_residency").ok(), Some(DataResidency::In));
        assert_eq!(DataResidency::from_header(Some("IN")).ok().flatten(), Some(DataResidency::In));
        assert_eq!(DataResidency::from_header(None).ok().flatten(), None);
        for bad in [json!("india"), json!(true), json!(null), json!(" in"), json!(1)] {
            let error = DataResidency::from_field(&bad, "data_residency").err().map(|e| e.to_string());
            assert!(error.is_some_and(|e| e.contains("data_residency")), "{bad}");
        }
        assert!(DataResidency::from_header(Some("eu")).is_err());
    }

    #[test]
    fn in_allows_only_india_hosted_providers() -> Result<(), crate::catalog::CatalogError> {
        let catalog = Catalog::builtin()?;
        assert!(DataResidency::In.allows(&catalog, "neevcloud"));
        assert!(!DataResidency::In.allows(&catalog, "cerebras"));
        assert!(!DataResidency::In.allows(&catalog, "unknown"));
        assert!(DataResidency::Any.allows(&catalog, "cerebras"));
        Ok(())
    }
}
