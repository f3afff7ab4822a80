//! The KMS adapter of the vault's envelope encryption, against moto's KMS (started by `make test`).

use shared::kyc::vault::{self, DataKeys, KmsDataKeys, VaultError};
use shared::testing::moto_kms_client;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn kms_keys() -> Result<KmsDataKeys, Box<dyn std::error::Error>> {
    let client = moto_kms_client()?;
    let key = client.create_key().description("inferex test vault key").send().await?;
    let key_id = key.key_metadata.map(|m| m.key_id).ok_or("moto returned no key metadata")?;
    Ok(KmsDataKeys::new(client, key_id))
}

#[tokio::test]
async fn kms_data_keys_seal_and_open() -> TestResult {
    let keys = kms_keys().await?;
    let data_key = keys.generate().await?;
    assert_ne!(data_key.wrapped, data_key.plaintext.to_vec(), "only the wrapped key is stored");
    let sealed = vault::seal(&data_key, keys.provider(), b"ABCPE1234F", b"usr_1:pan")?;
    assert_eq!(sealed.provider, "kms");
    assert_eq!(vault::open(&keys, &sealed, b"usr_1:pan").await?, b"ABCPE1234F");
    assert!(matches!(vault::open(&keys, &sealed, b"usr_2:pan").await, Err(VaultError::Integrity)));
    Ok(())
}

#[tokio::test]
async fn a_tampered_wrapped_key_is_refused_by_kms() -> TestResult {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let keys = kms_keys().await?;
    let data_key = keys.generate().await?;
    let mut sealed = vault::seal(&data_key, keys.provider(), b"234123412346", b"usr_1:aadhaar")?;
    let mut wrapped = b64.decode(&sealed.wrapped_key)?;
    let last = wrapped.len() - 1;
    wrapped[last] ^= 0x55;
    sealed.wrapped_key = b64.encode(wrapped);
    assert!(matches!(vault::open(&keys, &sealed, b"usr_1:aadhaar").await, Err(VaultError::Provider(_))));
    Ok(())
}

#[tokio::test]
async fn kms_hmac_fingerprints_are_stable_kind_separated_and_need_a_mac_key() -> TestResult {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    use shared::kyc::vault::Fingerprinter;
    let client = moto_kms_client()?;
    let key = client
        .create_key()
        .key_spec(KeySpec::Hmac256)
        .key_usage(KeyUsageType::GenerateVerifyMac)
        .description("inferex test fingerprint key")
        .send()
        .await?;
    let key_id = key.key_metadata.map(|m| m.key_id).ok_or("moto returned no key metadata")?;
    let fingerprinter = Fingerprinter::kms(client.clone(), key_id);
    let pan = fingerprinter.fingerprint("pan", "ABCPE1234F").await?;
    assert_eq!(pan.len(), 64);
    assert!(pan.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(pan, fingerprinter.fingerprint("pan", "ABCPE1234F").await?, "equal numbers, equal fingerprints");
    assert_ne!(pan, fingerprinter.fingerprint("aadhaar", "ABCPE1234F").await?);
    assert_ne!(pan, fingerprinter.fingerprint("pan", "ABCPE1234G").await?);

    // An encryption key cannot stand in for the MAC key: fingerprints fail rather than change.
    let wrong = client.create_key().description("not a MAC key").send().await?;
    let wrong_id = wrong.key_metadata.map(|m| m.key_id).ok_or("moto returned no key metadata")?;
    assert!(Fingerprinter::kms(client, wrong_id).fingerprint("pan", "ABCPE1234F").await.is_err());
    Ok(())
}
