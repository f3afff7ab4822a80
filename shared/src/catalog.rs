//! The model catalog (`catalog/models.json`, compiled in): public model ids, their provider routes in
//! fallback order, context length, output cap, prices in integer paise per million tokens, and what a hold
//! must allow for: the tokens a chat template adds and the parameters each route honours for the output cap.

use serde::{Deserialize, Serialize};

use crate::money::UNITS_PER_PAISA;

/// The catalog as shipped: also published as the dashboard's `/catalog.json` (its public models page).
pub const CATALOG_JSON: &str = include_str!("../../catalog/models.json");

/// Wallet units per token for a price of one paisa per million tokens: 10^7 / 10^6 = 10, exactly.
pub const UNITS_PER_TOKEN_PER_PAISA_PER_MILLION: i64 = UNITS_PER_PAISA / 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub provider: String,
    pub model: String,
    /// The output-cap parameters this route honours on chat completions; the gateway writes each of them,
    /// equal to what was held. (`/v1/completions` has only `max_tokens`.)
    pub output_cap_params: Vec<String>,
}

/// The output-cap parameters of the OpenAI API.
pub const OUTPUT_CAP_PARAMS: [&str; 2] = ["max_completion_tokens", "max_tokens"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    pub context_length: u32,
    pub max_output_tokens: u32,
    pub input_paise_per_million: i64,
    pub output_paise_per_million: i64,
    /// Prompt tokens the model's chat template may add to a request (system block, date header, tool
    /// preamble), beyond the request's own bytes.
    pub template_tokens_per_request: u32,
    /// And per message or tool definition (role headers, separators).
    pub template_tokens_per_message: u32,
    pub routes: Vec<Route>,
}

impl Model {
    /// The exact cost of a call in wallet units (see [`crate::money`]); saturates rather than overflowing.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> i64 {
        let per_token = |paise: i64| paise.saturating_mul(UNITS_PER_TOKEN_PER_PAISA_PER_MILLION);
        let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        tokens(prompt_tokens)
            .saturating_mul(per_token(self.input_paise_per_million))
            .saturating_add(tokens(completion_tokens).saturating_mul(per_token(self.output_paise_per_million)))
    }
}

/// Where a provider runs the calls we route to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSite {
    /// Who the provider is, as the privacy notice names it.
    #[serde(default)]
    pub legal_name: String,
    /// ISO 3166 alpha-2, e.g. `IN`.
    pub country: String,
    pub region: String,
}

impl ProviderSite {
    fn is_valid(&self) -> bool {
        self.country.len() == 2 && self.country.chars().all(|c| c.is_ascii_uppercase()) && !self.region.is_empty()
    }
}

/// India, as a provider's country.
pub const INDIA: &str = "IN";

#[derive(Debug, Clone, Deserialize)]
pub struct Catalog {
    pub models: Vec<Model>,
    /// Every provider a route names, with where it runs.
    #[serde(default)]
    pub providers: std::collections::BTreeMap<String, ProviderSite>,
}

#[derive(Debug, thiserror::Error)]
#[error("model catalog is invalid: {0}")]
pub struct CatalogError(String);

impl Catalog {
    /// The catalog shipped with this build, validated.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::parse(CATALOG_JSON)
    }

    pub fn parse(json: &str) -> Result<Self, CatalogError> {
        let catalog: Catalog = serde_json::from_str(json).map_err(|e| CatalogError(e.to_string()))?;
        for (i, model) in catalog.models.iter().enumerate() {
            if catalog.models[..i].iter().any(|m| m.id == model.id) {
                return Err(CatalogError(format!("model {} is listed twice", model.id)));
            }
            if model.routes.is_empty() {
                return Err(CatalogError(format!("model {} has no provider route", model.id)));
            }
            if model.input_paise_per_million <= 0 || model.output_paise_per_million <= 0 {
                return Err(CatalogError(format!("model {} must have positive prices", model.id)));
            }
            if model.max_output_tokens == 0 || model.max_output_tokens > model.context_length {
                return Err(CatalogError(format!("model {} has an invalid output cap", model.id)));
            }
            for route in &model.routes {
                if route.output_cap_params.is_empty()
                    || route.output_cap_params.iter().any(|p| !OUTPUT_CAP_PARAMS.contains(&p.as_str()))
                {
                    return Err(CatalogError(format!(
                        "route {} of model {} must name its output-cap parameters among {OUTPUT_CAP_PARAMS:?}",
                        route.provider, model.id
                    )));
                }
                let sited = catalog.providers.get(&route.provider).is_some_and(ProviderSite::is_valid);
                if !sited {
                    return Err(CatalogError(format!(
                        "route {} of model {} names a provider with no country (ISO 3166 alpha-2) in `providers`",
                        route.provider, model.id
                    )));
                }
            }
        }
        Ok(catalog)
    }

    pub fn model(&self, id: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.id == id)
    }

    /// Where `provider` runs its calls (every route's provider has a site: [`Catalog::parse`] checks it).
    pub fn site_of(&self, provider: &str) -> Option<&ProviderSite> {
        self.providers.get(provider)
    }

    /// Whether `provider` runs its calls in India.
    pub fn in_india(&self, provider: &str) -> bool {
        self.site_of(provider).is_some_and(|site| site.country == INDIA)
    }

    /// The providers a model's routes go to, in route order, once each, with where each runs.
    pub fn sites_of<'a>(&'a self, model: &'a Model) -> Vec<(&'a str, &'a ProviderSite)> {
        let mut sites: Vec<(&str, &ProviderSite)> = Vec::new();
        for route in &model.routes {
            if let Some(site) = self.site_of(&route.provider)
                && !sites.iter().any(|(name, _)| *name == route.provider)
            {
                sites.push((&route.provider, site));
            }
        }
        sites
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_is_valid_and_routes_to_known_providers() -> Result<(), CatalogError> {
        let catalog = Catalog::builtin()?;
        assert!(catalog.models.len() >= 2);
        for model in &catalog.models {
            for route in &model.routes {
                assert!(["cerebras", "neevcloud"].contains(&route.provider.as_str()), "{}", route.provider);
            }
        }
        Ok(())
    }

    #[test]
    fn the_builtin_catalog_has_an_india_only_a_foreign_only_and_a_both_model() -> Result<(), CatalogError> {
        let catalog = Catalog::builtin()?;
        let india = |m: &Model| m.routes.iter().map(|r| catalog.in_india(&r.provider)).collect::<Vec<_>>();
        assert!(catalog.models.iter().any(|m| india(m).iter().all(|i| *i)), "a model served in India only");
        assert!(catalog.models.iter().any(|m| india(m).iter().all(|i| !*i)), "a model served abroad only");
        assert!(catalog.models.iter().any(|m| india(m).contains(&true) && india(m).contains(&false)), "both");
        let both = catalog.model("llama-3.1-8b").ok_or(CatalogError("llama-3.1-8b".into()))?;
        let sites: Vec<(&str, &str)> = catalog.sites_of(both).iter().map(|(n, s)| (*n, s.country.as_str())).collect();
        assert_eq!(sites, [("cerebras", "US"), ("neevcloud", "IN")]);
        Ok(())
    }

    #[test]
    fn one_token_on_the_cheapest_model_has_an_exact_non_zero_cost() -> Result<(), CatalogError> {
        let catalog = Catalog::builtin()?;
        let cheapest =
            catalog.models.iter().min_by_key(|m| m.input_paise_per_million).ok_or(CatalogError("empty".into()))?;
        assert!(cheapest.cost(1, 0) > 0);
        // ₹8 per million tokens = 800 paise/M: one token costs 8,000 nano-rupees, a million cost ₹8 exactly.
        let model = Model {
            id: "m".into(),
            context_length: 10,
            max_output_tokens: 5,
            input_paise_per_million: 800,
            output_paise_per_million: 1_600,
            template_tokens_per_request: 0,
            template_tokens_per_message: 0,
            routes: vec![],
        };
        assert_eq!(model.cost(1, 0), 8_000);
        assert_eq!(model.cost(1_000_000, 0), 8 * crate::money::UNITS_PER_RUPEE);
        assert_eq!(model.cost(3, 2), 3 * 8_000 + 2 * 16_000);
        assert_eq!(model.cost(u64::MAX, u64::MAX), i64::MAX);
        Ok(())
    }

    #[test]
    fn invalid_catalogs_are_refused() {
        let dup = r#"{"providers":{"cerebras":{"country":"US","region":"us-central"}},"models":[{"id":"a","context_length":10,"max_output_tokens":5,"input_paise_per_million":1,"output_paise_per_million":1,"template_tokens_per_request":1,"template_tokens_per_message":1,"routes":[{"provider":"cerebras","model":"x","output_cap_params":["max_tokens"]}]},
                                 {"id":"a","context_length":10,"max_output_tokens":5,"input_paise_per_million":1,"output_paise_per_million":1,"template_tokens_per_request":1,"template_tokens_per_message":1,"routes":[{"provider":"cerebras","model":"x","output_cap_params":["max_tokens"]}]}]}"#;
        assert!(Catalog::parse(dup).is_err_and(|e| e.to_string().contains("listed twice")));
        let no_routes = r#"{"models":[{"id":"a","context_length":10,"max_output_tokens":5,"input_paise_per_million":1,"output_paise_per_million":1,"template_tokens_per_request":1,"template_tokens_per_message":1,"routes":[]}]}"#;
        assert!(Catalog::parse(no_routes).is_err());
        let no_cap = r#"{"models":[{"id":"a","context_length":10,"max_output_tokens":5,"input_paise_per_million":1,"output_paise_per_million":1,"template_tokens_per_request":1,"template_tokens_per_message":1,"routes":[{"provider":"cerebras","model":"x","output_cap_params":[]}]}]}"#;
        assert!(Catalog::parse(no_cap).is_err());
        let odd_cap = no_cap.replace("[]}", r#"["max_new_tokens"]}"#);
        assert!(Catalog::parse(&odd_cap).is_err());
        let capped = no_cap.replace("[]}", r#"["max_tokens"]}"#);
        assert!(
            Catalog::parse(&capped).is_err_and(|e| e.to_string().contains("no country")),
            "a provider with no site"
        );
        let sited = capped
            .replace(r#"{"models":"#, r#"{"providers":{"cerebras":{"country":"US","region":"us-central"}},"models":"#);
        assert!(Catalog::parse(&sited).is_ok());
        let lowercase = sited.replace(r#""US""#, r#""us""#);
        assert!(Catalog::parse(&lowercase).is_err());
    }
}
