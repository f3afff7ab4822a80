//! Envelope encryption for the KYC vault. Each submission gets a fresh 256-bit data key from a key
//! provider (AWS KMS in production, a local master key file for the embedded default); the numbers are
//! sealed with AES-256-GCM under that data key, bound to their owner and kind as associated data, and only
//! the provider-wrapped form of the data key is stored beside the ciphertext.

use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("key provider failed: {0}")]
    Provider(String),
    #[error("sealed data cannot be opened (tampered, or the wrong owner or key)")]
    Integrity,
    #[error("key file: {0}")]
    KeyFile(String),
}

impl From<VaultError> for crate::error::ApiError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Provider(_) => crate::error::ApiError::Unavailable(e.to_string()),
            _ => crate::error::ApiError::Internal(e.to_string()),
        }
    }
}

/// A fresh data key: use the plaintext once, store only the wrapped form.
pub struct DataKey {
    pub plaintext: [u8; 32],
    pub wrapped: Vec<u8>,
}

/// Where data keys come from.
#[async_trait]
pub trait DataKeys: Send + Sync {
    /// Names the provider in sealed records ("kms", "local").
    fn provider(&self) -> &'static str;
    async fn generate(&self) -> Result<DataKey, VaultError>;
    async fn unwrap(&self, wrapped: &[u8]) -> Result<[u8; 32], VaultError>;
}

fn key_bytes(bytes: &[u8]) -> Result<[u8; 32], VaultError> {
    bytes.try_into().map_err(|_| VaultError::Provider(format!("data key is {} bytes, not 32", bytes.len())))
}

/// AWS KMS: `GenerateDataKey` (AES_256) and `Decrypt` under one customer managed key.
pub struct KmsDataKeys {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsDataKeys {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self { client, key_id: key_id.into() }
    }
}

#[async_trait]
impl DataKeys for KmsDataKeys {
    fn provider(&self) -> &'static str {
        "kms"
    }

    async fn generate(&self) -> Result<DataKey, VaultError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .send()
            .await
            .map_err(|e| VaultError::Provider(format!("{e:?}")))?;
        let plaintext = out.plaintext.ok_or_else(|| VaultError::Provider("no plaintext data key".into()))?;
        let wrapped = out.ciphertext_blob.ok_or_else(|| VaultError::Provider("no wrapped data key".into()))?;
        Ok(DataKey { plaintext: key_bytes(plaintext.as_ref())?, wrapped: wrapped.into_inner() })
    }

    async fn unwrap(&self, wrapped: &[u8]) -> Result<[u8; 32], VaultError> {
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped.to_vec()))
            .send()
            .await
            .map_err(|e| VaultError::Provider(format!("{e:?}")))?;
        let plaintext = out.plaintext.ok_or_else(|| VaultError::Provider("no plaintext data key".into()))?;
        key_bytes(plaintext.as_ref())
    }
}

/// The embedded default: data keys wrapped (AES-256-GCM) under a local master key.
pub struct LocalDataKeys {
    master: [u8; 32],
}

const WRAP_AAD: &[u8] = b"inferex-data-key";

impl LocalDataKeys {
    pub fn new(master: [u8; 32]) -> Self {
        Self { master }
    }

    /// Reads the master key file, creating it (owner-only permissions) on first run.
    pub fn from_key_file(path: &Path) -> Result<Self, VaultError> {
        Ok(Self::new(load_or_create_key_file(path)?))
    }
}

#[async_trait]
impl DataKeys for LocalDataKeys {
    fn provider(&self) -> &'static str {
        "local"
    }

    async fn generate(&self) -> Result<DataKey, VaultError> {
        let mut plaintext = [0u8; 32];
        OsRng.fill_bytes(&mut plaintext);
        let (nonce, ciphertext) = encrypt(&self.master, &plaintext, WRAP_AAD)?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&ciphertext);
        Ok(DataKey { plaintext, wrapped })
    }

    async fn unwrap(&self, wrapped: &[u8]) -> Result<[u8; 32], VaultError> {
        if wrapped.len() < 12 {
            return Err(VaultError::Integrity);
        }
        let (nonce, ciphertext) = wrapped.split_at(12);
        key_bytes(&decrypt(&self.master, nonce, ciphertext, WRAP_AAD)?)
    }
}

/// A 32-byte key kept hex-encoded in a file created with mode 0600 on first use.
pub fn load_or_create_key_file(path: &Path) -> Result<[u8; 32], VaultError> {
    let err = |e: std::io::Error| VaultError::KeyFile(format!("{}: {e}", path.display()));
    if let Ok(text) = std::fs::read_to_string(path) {
        let bytes = hex::decode(text.trim()).map_err(|e| VaultError::KeyFile(format!("{}: {e}", path.display())))?;
        return bytes
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::KeyFile(format!("{}: not 32 bytes", path.display())));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(err)?;
    file.write_all(hex::encode(key).as_bytes()).map_err(err)?;
    Ok(key)
}

fn encrypt(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Result<([u8; 12], Vec<u8>), VaultError> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .map_err(|_| VaultError::Integrity)?;
    Ok((nonce, ciphertext))
}

fn decrypt(key: &[u8; 32], nonce: &[u8], ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, VaultError> {
    if nonce.len() != 12 {
        return Err(VaultError::Integrity);
    }
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad })
        .map_err(|_| VaultError::Integrity)
}

/// A sealed secret as stored in the vault table.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub algorithm: String,
    pub provider: String,
    pub wrapped_key: String,
    pub nonce: String,
    pub ciphertext: String,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed").field("provider", &self.provider).finish_non_exhaustive()
    }
}

/// Seals `plaintext` under a data key; `aad` (owner and kind) must be presented again to open it.
pub fn seal(key: &DataKey, provider: &str, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, VaultError> {
    let (nonce, ciphertext) = encrypt(&key.plaintext, plaintext, aad)?;
    Ok(Sealed {
        algorithm: "AES-256-GCM".into(),
        provider: provider.into(),
        wrapped_key: B64.encode(&key.wrapped),
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(ciphertext),
    })
}

/// Opens a sealed secret: unwraps its data key with the provider, then decrypts and authenticates.
pub async fn open(keys: &dyn DataKeys, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, VaultError> {
    let decode = |s: &str| B64.decode(s).map_err(|_| VaultError::Integrity);
    let data_key = keys.unwrap(&decode(&sealed.wrapped_key)?).await?;
    decrypt(&data_key, &decode(&sealed.nonce)?, &decode(&sealed.ciphertext)?, aad)
}

/// Keyed fingerprints of document numbers: equal numbers give equal fingerprints, but nobody without the
/// key can test a guess (a plain hash of a 12-digit number would be brute-forced in seconds).
#[derive(Clone)]
pub enum Fingerprinter {
    /// A local key file (`make run`, tests): whoever reads the file can compute fingerprints.
    Local(Vec<u8>),
    /// A KMS HMAC key (`GenerateMac`, HMAC_SHA_256) in AWS: the key never leaves KMS, and only the roles
    /// its key policy names can compute a fingerprint, so table readers cannot test candidate numbers.
    Kms { client: aws_sdk_kms::Client, key_id: String },
}

impl Fingerprinter {
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self::Local(key.into())
    }

    pub fn kms(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self::Kms { client, key_id: key_id.into() }
    }

    /// Hex HMAC-SHA256 over `kind:value`, so a PAN and an Aadhaar number never collide.
    pub async fn fingerprint(&self, kind: &str, value: &str) -> Result<String, VaultError> {
        let message = format!("{kind}:{value}");
        match self {
            Self::Local(key) => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .map_err(|_| VaultError::Provider("the fingerprint key is unusable".into()))?;
                mac.update(message.as_bytes());
                Ok(hex::encode(mac.finalize().into_bytes()))
            }
            Self::Kms { client, key_id } => {
                let out = client
                    .generate_mac()
                    .key_id(key_id)
                    .mac_algorithm(aws_sdk_kms::types::MacAlgorithmSpec::HmacSha256)
                    .message(Blob::new(message.into_bytes()))
                    .send()
                    .await
                    .map_err(|e| VaultError::Provider(aws_sdk_kms::error::DisplayErrorContext(e).to_string()))?;
                let mac = out.mac.ok_or_else(|| VaultError::Provider("KMS returned no MAC".into()))?;
                Ok(hex::encode(mac.as_ref()))
            }
        }
    }
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(_) => f.write_str("Fingerprinter::Local(..)"),
            Self::Kms { key_id, .. } => write!(f, "Fingerprinter::Kms({key_id})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_envelope_round_trip_and_integrity() -> Result<(), VaultError> {
        let keys = LocalDataKeys::new([7u8; 32]);
        let key = keys.generate().await?;
        let sealed = seal(&key, keys.provider(), b"234123412346", b"usr_1:aadhaar")?;
        assert!(!sealed.ciphertext.contains("234123412346"));
        assert_eq!(open(&keys, &sealed, b"usr_1:aadhaar").await?, b"234123412346");
        // Another owner's context, a flipped bit, or another master key: nothing opens.
        assert!(matches!(open(&keys, &sealed, b"usr_2:aadhaar").await, Err(VaultError::Integrity)));
        let mut tampered = sealed.clone();
        let mut bytes = B64.decode(&tampered.ciphertext).map_err(|_| VaultError::Integrity)?;
        bytes[0] ^= 1;
        tampered.ciphertext = B64.encode(bytes);
        assert!(matches!(open(&keys, &tampered, b"usr_1:aadhaar").await, Err(VaultError::Integrity)));
        let other = LocalDataKeys::new([8u8; 32]);
        assert!(open(&other, &sealed, b"usr_1:aadhaar").await.is_err());
        Ok(())
    }

    #[test]
    fn key_files_are_created_once_with_owner_only_access() -> Result<(), VaultError> {
        let dir = std::env::temp_dir().join(format!("inferex-key-{}", crate::secrets::random_suffix()));
        let path = dir.join("master.key");
        let first = load_or_create_key_file(&path)?;
        let second = load_or_create_key_file(&path)?;
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
            assert_eq!(mode, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }

    #[tokio::test]
    async fn fingerprints_are_keyed_and_kind_separated() -> Result<(), VaultError> {
        let a = Fingerprinter::new(b"key-a".to_vec());
        let b = Fingerprinter::new(b"key-b".to_vec());
        let pan = a.fingerprint("pan", "ABCPE1234F").await?;
        assert_eq!(pan, a.fingerprint("pan", "ABCPE1234F").await?);
        assert_ne!(pan, b.fingerprint("pan", "ABCPE1234F").await?);
        assert_ne!(a.fingerprint("pan", "X").await?, a.fingerprint("aadhaar", "X").await?);
        assert_eq!(pan.len(), 64);
        Ok(())
    }
}
