//! The upstreams: which providers exist, their base URLs and keys.

use std::collections::HashMap;
use std::sync::Arc;

use crate::env::var;
use crate::runtime_secrets::{self, PROVIDER_KEY, Rotating, SecretSource};
use crate::secrets::SecretString;

/// One OpenAI-compatible upstream.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub base_url: String,
    pub api_key: Option<Arc<Rotating<SecretString>>>,
}

/// A provider key from the local environment, checked like every secret.
fn provider_key_from_env(name: &str) -> Result<Option<Arc<Rotating<SecretString>>>, crate::env::ConfigError> {
    let Some(raw) = var::<String>(name)? else { return Ok(None) };
    let key = runtime_secrets::checked(name, &raw, PROVIDER_KEY)
        .map_err(|e| crate::env::ConfigError { name: name.to_owned(), reason: e.to_string() })?;
    Ok(Some(Arc::new(Rotating::fixed(key, Arc::new(crate::clock::SystemClock)))))
}

/// Upstreams by name: `cerebras` (`CEREBRAS_API_KEY`, `CEREBRAS_BASE_URL`, default
/// `https://api.cerebras.ai/v1`) and `neevcloud` (`NEEVCLOUD_API_KEY`, `NEEVCLOUD_BASE_URL`; its routes are
/// skipped while no base URL is configured).
#[derive(Debug, Clone, Default)]
pub struct Providers {
    by_name: HashMap<String, Provider>,
}

impl Providers {
    pub fn from_env() -> Result<Self, crate::env::ConfigError> {
        let mut providers = Self::default();
        let cerebras_url = var::<String>("CEREBRAS_BASE_URL")?.unwrap_or_else(|| "https://api.cerebras.ai/v1".into());
        providers.insert(Provider {
            name: "cerebras".into(),
            base_url: cerebras_url,
            api_key: provider_key_from_env("CEREBRAS_API_KEY")?,
        });
        if let Some(url) = var::<String>("NEEVCLOUD_BASE_URL")? {
            providers.insert(Provider {
                name: "neevcloud".into(),
                base_url: url,
                api_key: provider_key_from_env("NEEVCLOUD_API_KEY")?,
            });
        }
        Ok(providers)
    }

    /// In AWS: base URLs from the environment as above, keys from the Secrets Manager secret
    /// `{"cerebras": "…", "neevcloud": "…"}` (the second only while `NEEVCLOUD_BASE_URL` is set); each key is
    /// checked at start and refreshed like every secret.
    pub async fn from_secret(
        source: Arc<dyn SecretSource>,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Result<Self, crate::error::BoxError> {
        let mut providers = Self::from_env()?;
        let names: Vec<String> = providers.by_name.keys().cloned().collect();
        // Each provider's key, read at once (a cold start waits for one read, not one per provider).
        let loads = names.iter().map(|name| {
            let field = name.clone();
            let parse = move |raw: &str| {
                let keys: HashMap<String, String> =
                    serde_json::from_str(raw).map_err(|_| runtime_secrets::SecretError::Malformed {
                        name: "the provider keys secret".into(),
                        reason: "expected JSON {\"cerebras\": \"…\", \"neevcloud\": \"…\"}".into(),
                    })?;
                let value = keys.get(&field).map(String::as_str).unwrap_or_default();
                runtime_secrets::checked(&format!("the provider keys secret's {field}"), value, PROVIDER_KEY)
            };
            Rotating::load(Arc::clone(&source), parse, Arc::clone(&clock))
        });
        let keys = futures_util::future::try_join_all(loads).await?;
        for (name, key) in names.iter().zip(keys) {
            if let Some(provider) = providers.by_name.get_mut(name) {
                provider.api_key = Some(Arc::new(key));
            }
        }
        Ok(providers)
    }

    pub fn insert(&mut self, provider: Provider) {
        self.by_name.insert(provider.name.clone(), provider);
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.by_name.get(name)
    }
}
