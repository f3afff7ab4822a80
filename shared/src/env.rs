//! Reading the environment: one variable at a time, parsed, with an error that names it. Below every
//! module that is configured from the environment (configuration, retention windows, Razorpay, providers).

use std::env;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name} is invalid: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub reason: String,
}

/// Reads `name`, parsing it when set and non-empty.
pub fn var<T: FromStr>(name: &str) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match env::var(name) {
        Ok(raw) if !raw.trim().is_empty() => raw
            .trim()
            .parse()
            .map(Some)
            .map_err(|e: T::Err| ConfigError { name: name.to_owned(), reason: e.to_string() }),
        _ => Ok(None),
    }
}
