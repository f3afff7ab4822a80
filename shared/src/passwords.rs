//! Password hashing with argon2id (the argon2 crate's defaults: 19 MiB, 2 passes, 1 lane, OWASP's
//! recommended minimum). Hashing is CPU-bound, so the async helpers run it on the blocking pool, at most
//! [`HASHES_AT_ONCE`] at a time: a burst of logins queues here instead of filling the (capped) blocking pool
//! that the embedded store's operations share, and 19 MiB each stays bounded.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::error::ApiError;

/// Password hashes computed at once in a process (one per core of the machines we run on).
pub const HASHES_AT_ONCE: usize = 2;

/// Waits for one of the [`HASHES_AT_ONCE`] turns.
async fn hashing_turn() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HASHES_AT_ONCE);
    TURNS.acquire().await.map_err(|e| ApiError::Internal(format!("hashing turns closed: {e}")))
}

/// Longest password accepted: argon2 hashes any length, but unbounded input is a denial-of-service lever.
pub const MAX_PASSWORD_CHARS: usize = 256;

pub fn hash(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(format!("password hashing failed: {e}")))
}

/// True when `password` matches the stored PHC string. A malformed stored hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

/// Spends the same work as a real verification, so that unknown emails answer as slowly as wrong passwords.
pub fn verify_against_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let stored = DUMMY.get_or_init(|| hash("inferex-dummy-password").unwrap_or_default());
    let _ = verify(password, stored);
}

pub async fn hash_async(password: String) -> Result<String, ApiError> {
    let turn = hashing_turn().await?;
    // The turn goes with the work: a caller that goes away does not free it while the hash still runs.
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        hash(&password)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("hashing task failed: {e}")))?
}

/// Verifies against the stored hash, or against a dummy when there is none.
pub async fn verify_async(password: String, stored: Option<String>) -> Result<bool, ApiError> {
    let turn = hashing_turn().await?;
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        match stored {
            Some(stored) => verify(&password, &stored),
            None => {
                verify_against_dummy(&password);
                false
            }
        }
    })
    .await
    .map_err(|e| ApiError::Internal(format!("verification task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() -> Result<(), ApiError> {
        let a = hash("correct horse battery")?;
        let b = hash("correct horse battery")?;
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify("correct horse battery", &a));
        assert!(!verify("correct horse batterY", &a));
        assert!(!verify("anything", "not a phc string"));
        Ok(())
    }
}
