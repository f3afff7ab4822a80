//! Secrets read at run time. Every secret is checked before a function starts serving: missing, empty,
//! placeholder or too-short values stop the function at its cold start (fail closed). In AWS each secret is
//! read from Secrets Manager by ARN and re-read every few minutes, so a rotation needs no redeploy; a
//! signature check that fails may ask for one early re-read (the secret may just have been rotated).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use tokio::sync::RwLock;

use crate::clock::Clock;
use crate::secrets::SecretString;

/// How long a value read from Secrets Manager is used before it is read again.
pub const REFRESH_AFTER: Duration = Duration::minutes(5);
/// Early re-reads (after a failed signature) happen at most this often, so a flood of forged signatures
/// cannot become a flood of Secrets Manager calls.
pub const EARLY_REREAD_GAP: Duration = Duration::seconds(30);

pub mod strength;

/// What a secret must be: at least `min_chars` characters and `min_bits` bits of estimated entropy
/// ([`strength`]; 0 turns the estimate and the well-known list off, for values that are not secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretRule {
    pub min_chars: usize,
    pub min_bits: u32,
}

/// Secrets we choose ourselves: at least 128 bits (`openssl rand -hex 32` gives about 300).
pub const CHOSEN_BITS: u32 = 128;
/// Credentials a provider issues, whose length is theirs (see [`strength`]).
pub const ISSUED_BITS: u32 = 96;

/// Razorpay key secrets are 24 letters and digits, issued by Razorpay.
pub const RAZORPAY_KEY_SECRET: SecretRule = SecretRule { min_chars: 16, min_bits: ISSUED_BITS };
/// The webhook secret is chosen by us in Razorpay's dashboard.
pub const WEBHOOK_SECRET: SecretRule = SecretRule { min_chars: 20, min_bits: CHOSEN_BITS };
pub const OPERATOR_TOKEN: SecretRule = SecretRule { min_chars: 32, min_bits: CHOSEN_BITS };
/// Model providers' API keys: long random strings they issue.
pub const PROVIDER_KEY: SecretRule = SecretRule { min_chars: 20, min_bits: ISSUED_BITS };
/// The value CloudFront sends the API to prove a request came through it (template.yaml: 48 characters).
pub const EDGE_SECRET: SecretRule = SecretRule { min_chars: 32, min_bits: CHOSEN_BITS };
/// A Razorpay key id (`rzp_live_` and 14 characters): public in every Checkout page, so only its form counts.
pub const RAZORPAY_KEY_ID: SecretRule = SecretRule { min_chars: 14, min_bits: 0 };

/// Words a value nobody filled in is made of (`REPLACE`, `change-me`, `your_key_here`): a word of the value
/// (split at anything not a letter or digit) that starts with one of these marks a placeholder. A random
/// secret is one long word that practically never starts so.
const PLACEHOLDER_WORDS: [&str; 8] = ["replace", "change", "placeholder", "example", "dummy", "todo", "your", "xxx"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret {name} is missing or empty")]
    Missing { name: String },
    #[error("secret {name} holds a placeholder value; fill it (docs/operations.md, \"Deploying\")")]
    Placeholder { name: String },
    #[error("secret {name} is too short (at least {min} characters)")]
    TooShort { name: String, min: usize },
    #[error(
        "secret {name} is a well-known value (it appears in this project's code or documentation); generate a new one"
    )]
    WellKnown { name: String },
    #[error(
        "secret {name} is too easy to guess (at least {min_bits} bits of estimated entropy: docs/operations.md, \"Secrets\")"
    )]
    Guessable { name: String, min_bits: u32 },
    #[error("secret {name} is malformed: {reason}")]
    Malformed { name: String, reason: String },
    #[error("secret {name} could not be read: {reason}")]
    Unreadable { name: String, reason: String },
}

impl SecretError {
    /// The secret (or variable) the error is about.
    pub fn name(&self) -> &str {
        match self {
            Self::Missing { name }
            | Self::Placeholder { name }
            | Self::TooShort { name, .. }
            | Self::WellKnown { name }
            | Self::Guessable { name, .. }
            | Self::Malformed { name, .. }
            | Self::Unreadable { name, .. } => name,
        }
    }
}

/// Checks one secret value against its rule: present, not a placeholder, long enough, not well known, and
/// hard enough to guess. Never echoes the value.
pub fn checked(name: &str, value: &str, rule: SecretRule) -> Result<SecretString, SecretError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(SecretError::Missing { name: name.to_owned() });
    }
    let lower = value.to_ascii_lowercase();
    let mut words = lower.split(|c: char| !c.is_ascii_alphanumeric());
    if words.any(|word| PLACEHOLDER_WORDS.iter().any(|marker| word.starts_with(marker))) {
        return Err(SecretError::Placeholder { name: name.to_owned() });
    }
    if value.chars().count() < rule.min_chars {
        return Err(SecretError::TooShort { name: name.to_owned(), min: rule.min_chars });
    }
    if rule.min_bits == 0 {
        return Ok(SecretString::new(value));
    }
    if strength::is_well_known(value) {
        return Err(SecretError::WellKnown { name: name.to_owned() });
    }
    if strength::estimated_bits(value) < f64::from(rule.min_bits) {
        return Err(SecretError::Guessable { name: name.to_owned(), min_bits: rule.min_bits });
    }
    Ok(SecretString::new(value))
}

/// Where a secret's current value comes from.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The secret's name for logs and errors (never its value).
    fn name(&self) -> &str;
    async fn read(&self) -> Result<String, SecretError>;
}

/// A Secrets Manager secret, read with `GetSecretValue` (the function's role may read only this ARN).
pub struct SecretsManagerSource {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
}

impl SecretsManagerSource {
    pub fn new(client: aws_sdk_secretsmanager::Client, arn: impl Into<String>) -> Self {
        Self { client, arn: arn.into() }
    }
}

#[async_trait]
impl SecretSource for SecretsManagerSource {
    fn name(&self) -> &str {
        &self.arn
    }

    async fn read(&self) -> Result<String, SecretError> {
        let unreadable = |reason: String| SecretError::Unreadable { name: self.arn.clone(), reason };
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.arn)
            .send()
            .await
            .map_err(|e| unreadable(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()))?;
        out.secret_string().map(str::to_owned).ok_or_else(|| SecretError::Missing { name: self.arn.clone() })
    }
}

type Parser<T> = Box<dyn Fn(&str) -> Result<T, SecretError> + Send + Sync>;

struct Cached<T> {
    value: Arc<T>,
    read_at: DateTime<Utc>,
    early_reread_at: Option<DateTime<Utc>>,
}

/// A secret's parsed value, kept fresh from its source. A fixed value (tests, `make run`) never changes.
pub struct Rotating<T> {
    source: Option<Arc<dyn SecretSource>>,
    parse: Parser<T>,
    clock: Arc<dyn Clock>,
    cached: RwLock<Cached<T>>,
    /// One re-read at a time; meanwhile everyone else goes on with the cached value.
    rereading: AtomicBool,
}

/// Clears the re-read flag however the re-read ends (also when its future is dropped).
struct RereadDone<'a>(&'a AtomicBool);

impl Drop for RereadDone<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl<T> std::fmt::Debug for Rotating<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = self.source.as_ref().map_or("fixed", |s| s.name());
        write!(f, "Rotating({source}, [redacted])")
    }
}

impl<T: Send + Sync + 'static> Rotating<T> {
    /// A value that never changes (already checked by whoever built it).
    pub fn fixed(value: T, clock: Arc<dyn Clock>) -> Self {
        let read_at = clock.now();
        Self {
            source: None,
            parse: Box::new(|_| Err(SecretError::Missing { name: "fixed".into() })),
            clock,
            cached: RwLock::new(Cached { value: Arc::new(value), read_at, early_reread_at: None }),
            rereading: AtomicBool::new(false),
        }
    }

    /// Reads and checks the secret now: an error here must stop the function from starting.
    pub async fn load(
        source: Arc<dyn SecretSource>,
        parse: impl Fn(&str) -> Result<T, SecretError> + Send + Sync + 'static,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SecretError> {
        let value = parse(&source.read().await?)?;
        let read_at = clock.now();
        Ok(Self {
            source: Some(source),
            parse: Box::new(parse),
            clock,
            cached: RwLock::new(Cached { value: Arc::new(value), read_at, early_reread_at: None }),
            rereading: AtomicBool::new(false),
        })
    }

    /// The current value, re-read from the source when the cached one is older than [`REFRESH_AFTER`].
    pub async fn current(&self) -> Arc<T> {
        {
            let cached = self.cached.read().await;
            if self.source.is_none() || self.clock.now() - cached.read_at < REFRESH_AFTER {
                return Arc::clone(&cached.value);
            }
        }
        self.reread(false).await.unwrap_or_else(|value| value)
    }

    /// After a signature that did not verify: re-reads at once (at most every [`EARLY_REREAD_GAP`]) and
    /// returns the value read, or `None` when no re-read happened.
    pub async fn reread_early(&self) -> Option<Arc<T>> {
        self.source.as_ref()?;
        self.reread(true).await.ok()
    }

    /// `Ok(new value)` when the source was read, `Err(cached value)` when it was not (too soon, another
    /// re-read under way, or the read failed: the last good value stays in use and the failure is logged).
    /// No lock is held while the source is read, so requests never wait on Secrets Manager.
    async fn reread(&self, early: bool) -> Result<Arc<T>, Arc<T>> {
        let Some(source) = &self.source else {
            return Err(Arc::clone(&self.cached.read().await.value));
        };
        {
            let mut cached = self.cached.write().await;
            let now = self.clock.now();
            let fresh = now - cached.read_at < REFRESH_AFTER;
            let too_soon = cached.early_reread_at.is_some_and(|at| now - at < EARLY_REREAD_GAP);
            if (!early && fresh) || (early && too_soon) || self.rereading.swap(true, Ordering::SeqCst) {
                return Err(Arc::clone(&cached.value));
            }
            if early {
                cached.early_reread_at = Some(now);
            }
            // Counted as read from now on, so the others keep the cached value while this one reads.
            cached.read_at = now;
        }
        let _done = RereadDone(&self.rereading);
        let read = source.read().await.and_then(|raw| (self.parse)(&raw));
        let mut cached = self.cached.write().await;
        match read {
            Ok(value) => {
                cached.value = Arc::new(value);
                Ok(Arc::clone(&cached.value))
            }
            Err(e) => {
                tracing::error!(error = %e, "re-reading a secret failed; the last good value stays in use");
                Err(Arc::clone(&cached.value))
            }
        }
    }
}

/// Environment variables that would carry a secret: refused in AWS, where secrets come by ARN only.
pub const SECRET_ENV_VARS: [&str; 8] = [
    "RAZORPAY_KEY_SECRET",
    "CASHFREE_CLIENT_SECRET",
    "RAZORPAY_WEBHOOK_SECRET",
    "INFEREX_ADMIN_TOKEN",
    "INFEREX_KYC_FINGERPRINT_SECRET",
    "CEREBRAS_API_KEY",
    "NEEVCLOUD_API_KEY",
    "RAZORPAY_KEY_ID",
];

/// The first secret-bearing environment variable that is set, if any.
pub fn secret_in_environment() -> Option<&'static str> {
    SECRET_ENV_VARS.iter().copied().find(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Mutex;

    /// Rotation tests use readable values: only the form of a secret counts for them.
    const READABLE: SecretRule = SecretRule { min_chars: 20, min_bits: 0 };

    fn random_hex(bytes: usize) -> String {
        use rand::RngCore;
        let mut buf = vec![0u8; bytes];
        rand::rngs::OsRng.fill_bytes(&mut buf);
        hex::encode(buf)
    }

    #[test]
    fn missing_placeholder_and_short_secrets_are_refused_without_echoing_them() {
        assert_eq!(checked("s", "  ", WEBHOOK_SECRET), Err(SecretError::Missing { name: "s".into() }));
        for placeholder in [
            "REPLACE",
            "rzp_live_REPLACE",
            "changeme-please-1234567890",
            "xxxxxxxxxxxxxxxxxxxxxxxx",
            "your_key_here_0123456789",
        ] {
            let error = checked("s", placeholder, WEBHOOK_SECRET).err();
            assert_eq!(error, Some(SecretError::Placeholder { name: "s".into() }), "{placeholder}");
        }
        // A random secret that happens to contain a marker inside its one long word is not a placeholder.
        let marked = format!("{}todo{}Replace9", random_hex(8), random_hex(8));
        assert!(checked("s", &marked, WEBHOOK_SECRET).is_ok());
        let short = checked("s", "k3Y9", WEBHOOK_SECRET).err();
        assert_eq!(short, Some(SecretError::TooShort { name: "s".into(), min: 20 }));
        assert!(!short.map(|e| e.to_string()).unwrap_or_default().contains("k3Y9"));
        let secret = random_hex(32);
        assert_eq!(
            checked("s", &format!(" {secret} "), WEBHOOK_SECRET).map(|s| s.expose().to_owned()).ok(),
            Some(secret)
        );
    }

    #[test]
    fn well_known_sequences_and_guessable_secrets_are_refused_naming_only_the_variable() {
        for known in ["local_standin_webhook_secret", "local_standin_key_secret", "inferex_test_webhook_secret"] {
            let refused = checked("RAZORPAY_WEBHOOK_SECRET", known, WEBHOOK_SECRET).err();
            assert_eq!(refused, Some(SecretError::WellKnown { name: "RAZORPAY_WEBHOOK_SECRET".into() }), "{known}");
        }
        for guessable in ["abcdefghijklmnopqrstuvwxyz", "12345678901234567890", "test_webhook_secret_1234"] {
            let refused = checked("RAZORPAY_WEBHOOK_SECRET", guessable, WEBHOOK_SECRET).err();
            let expected = SecretError::Guessable { name: "RAZORPAY_WEBHOOK_SECRET".into(), min_bits: CHOSEN_BITS };
            assert_eq!(refused.as_ref(), Some(&expected), "{guessable}");
            assert!(!expected.to_string().contains(guessable));
        }
        for simple in ["aaaaaaaaaaaaaaaaaaaaaaaa", "abababababababababababab", "1212121234343434"] {
            assert!(checked("s", simple, SecretRule { min_chars: 16, min_bits: ISSUED_BITS }).is_err(), "{simple}");
        }
        // A key secret as Razorpay issues it: 24 random letters and digits.
        let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
        for _ in 0..50 {
            use rand::Rng;
            let key: String = (0..24).map(|_| alphabet[rand::rngs::OsRng.gen_range(0..alphabet.len())]).collect();
            assert!(checked("s", &key, RAZORPAY_KEY_SECRET).is_ok(), "{key}");
        }
        // Values that are not secret (a key id) are checked for their form only.
        assert!(checked("s", "rzp_test_localstandin", RAZORPAY_KEY_ID).is_ok());
    }

    struct Counting {
        value: Mutex<String>,
        reads: Mutex<u32>,
    }

    #[async_trait]
    impl SecretSource for Counting {
        fn name(&self) -> &str {
            "counting"
        }

        async fn read(&self) -> Result<String, SecretError> {
            *self.reads.lock().map_err(|_| SecretError::Missing { name: "lock".into() })? += 1;
            let value = self.value.lock().map_err(|_| SecretError::Missing { name: "lock".into() })?.clone();
            if value == "unreadable" {
                return Err(SecretError::Unreadable { name: "counting".into(), reason: "down".into() });
            }
            Ok(value)
        }
    }

    fn set(source: &Counting, value: &str) {
        if let Ok(mut v) = source.value.lock() {
            *v = value.to_owned();
        }
    }

    fn reads(source: &Counting) -> u32 {
        source.reads.lock().map(|r| *r).unwrap_or(0)
    }

    /// Answers at once the first time, then only when released.
    struct Slow {
        first: AtomicBool,
        release: tokio::sync::Notify,
    }

    #[async_trait]
    impl SecretSource for Slow {
        fn name(&self) -> &str {
            "slow"
        }

        async fn read(&self) -> Result<String, SecretError> {
            if self.first.swap(false, Ordering::SeqCst) {
                return Ok("first-secret-value-0123".into());
            }
            self.release.notified().await;
            Ok("second-secret-value-456".into())
        }
    }

    #[tokio::test]
    async fn requests_never_wait_for_a_slow_reread() -> Result<(), Box<dyn std::error::Error>> {
        let clock = ManualClock::starting_now();
        let source = Arc::new(Slow { first: AtomicBool::new(true), release: tokio::sync::Notify::new() });
        let parse = |raw: &str| checked("slow", raw, READABLE);
        let secret = Arc::new(Rotating::load(source.clone(), parse, Arc::new(clock.clone())).await?);
        clock.advance(REFRESH_AFTER);
        let rereader = crate::tasks::spawn("test reread", {
            let secret = Arc::clone(&secret);
            async move { secret.current().await.expose().to_owned() }
        });
        while !secret.rereading.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        // While Secrets Manager is slow, every other request goes on with the cached value.
        let meanwhile = tokio::time::timeout(std::time::Duration::from_secs(10), secret.current()).await?;
        assert_eq!(meanwhile.expose(), "first-secret-value-0123");
        source.release.notify_one();
        assert_eq!(rereader.await?, "second-secret-value-456");
        assert_eq!(secret.current().await.expose(), "second-secret-value-456");
        Ok(())
    }

    #[tokio::test]
    async fn rotation_is_picked_up_after_the_refresh_interval_and_early_rereads_are_rate_limited()
    -> Result<(), SecretError> {
        let clock = ManualClock::starting_now();
        let source = Arc::new(Counting { value: Mutex::new("first-secret-value-0123".into()), reads: Mutex::new(0) });
        let parse = |raw: &str| checked("counting", raw, READABLE);
        let secret = Rotating::load(source.clone(), parse, Arc::new(clock.clone())).await?;
        assert_eq!(secret.current().await.expose(), "first-secret-value-0123");

        set(&source, "second-secret-value-456");
        clock.advance(REFRESH_AFTER - Duration::seconds(1));
        assert_eq!(secret.current().await.expose(), "first-secret-value-0123", "cached within the interval");
        assert_eq!(reads(&source), 1);
        clock.advance(Duration::seconds(1));
        assert_eq!(secret.current().await.expose(), "second-secret-value-456", "re-read after it");
        assert_eq!(reads(&source), 2);

        // A failed signature may re-read at once, but only once per gap.
        set(&source, "third-secret-value-7890");
        assert_eq!(
            secret.reread_early().await.map(|s| s.expose().to_owned()).as_deref(),
            Some("third-secret-value-7890")
        );
        assert!(secret.reread_early().await.is_none());
        assert_eq!(reads(&source), 3);
        clock.advance(EARLY_REREAD_GAP);
        assert!(secret.reread_early().await.is_some());

        // A bad rotation (placeholder) or an unreadable source keeps the last good value.
        set(&source, "REPLACE");
        clock.advance(REFRESH_AFTER);
        assert_eq!(secret.current().await.expose(), "third-secret-value-7890");
        set(&source, "unreadable");
        clock.advance(REFRESH_AFTER);
        assert_eq!(secret.current().await.expose(), "third-secret-value-7890");

        // At start, the same values stop the function.
        let placeholder = Arc::new(Counting { value: Mutex::new("REPLACE".into()), reads: Mutex::new(0) });
        let refused = Rotating::load(placeholder, parse, Arc::new(clock.clone())).await.err();
        assert_eq!(refused, Some(SecretError::Placeholder { name: "counting".into() }));
        Ok(())
    }
}
