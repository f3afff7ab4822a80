//! Where a call runs: the provider that answered and its country (the answer's `x-inferex-provider` and
//! `x-inferex-country`, every streamed chunk's `inferex` fields, the usage log), and the check that a call
//! held to India has an India route to take before any money moves (`crate::residency`).

use serde_json::{Value, json};

use super::Gateway;
use super::request::Prepared;
use crate::error::ApiResult;
use crate::keys::KeyOwner;
use crate::residency::{self, DataResidency};

/// The provider that took a call, and its country (ISO 3166 alpha-2; empty for a provider the catalog does
/// not place, which [`crate::catalog::Catalog::parse`] never lets through).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedBy {
    pub provider: String,
    pub country: String,
}

impl ServedBy {
    pub fn of(gateway: &Gateway, provider: &str) -> Self {
        let country = gateway.catalog.site_of(provider).map(|site| site.country.clone()).unwrap_or_default();
        Self { provider: provider.to_owned(), country }
    }

    /// The fields a streamed chunk carries under `inferex`.
    pub fn fields(&self) -> Value {
        json!({ "provider": self.provider, "country": self.country })
    }
}

/// Whether `provider` may take the prepared call: configured here, and where its residency allows.
pub(super) fn route_allowed(gateway: &Gateway, prepared: &Prepared, provider: &str) -> bool {
    gateway.providers.get(provider).is_some() && prepared.residency.allows(&gateway.catalog, provider)
}

/// 400 `residency_unavailable` for a call held to India whose model has no India route configured here,
/// naming the models the key may call that have one; checked first in admission, so no money moves.
pub(super) fn check_residency(gateway: &Gateway, prepared: &Prepared, owner: &KeyOwner) -> ApiResult<()> {
    if prepared.residency == DataResidency::Any {
        return Ok(());
    }
    if prepared.model.routes.iter().any(|r| route_allowed(gateway, prepared, &r.provider)) {
        return Ok(());
    }
    let in_india = |m: &&crate::catalog::Model| {
        owner.allows(&m.id)
            && m.routes
                .iter()
                .any(|r| gateway.providers.get(&r.provider).is_some() && gateway.catalog.in_india(&r.provider))
    };
    let models: Vec<&str> = gateway.catalog.models.iter().filter(in_india).map(|m| m.id.as_str()).collect();
    Err(residency::unavailable(&prepared.model.id, &models))
}
