//! The blob port: raw webhook payloads and data exports. S3 in production (presigned download links), a
//! local folder for the embedded default (download links signed with a local key, served by the dev server).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("invalid blob key {0:?}")]
    InvalidKey(String),
    #[error("blob storage failed: {0}")]
    Backend(String),
}

impl From<BlobError> for crate::error::ApiError {
    fn from(e: BlobError) -> Self {
        crate::error::ApiError::Internal(e.to_string())
    }
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), BlobError>;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError>;
    /// Deletes a blob; deleting a missing blob is not an error.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
    /// A link that lets whoever holds it download the blob until `now + valid_for`, and no longer.
    async fn download_link(&self, key: &str, valid_for: Duration, now: DateTime<Utc>) -> Result<String, BlobError>;
    /// The local folder adapter, whose links the dev server serves; `None` for every other adapter.
    fn local(&self) -> Option<&LocalBlobs> {
        None
    }
}

/// Keys are relative, slash-separated paths of safe characters (no `..`, no leading slash).
fn check_key(key: &str) -> Result<(), BlobError> {
    let safe = !key.is_empty()
        && !key.starts_with('/')
        && key.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'));
    if safe { Ok(()) } else { Err(BlobError::InvalidKey(key.to_owned())) }
}

/// S3, with the bucket's default encryption and lifecycle rules (template.yaml) doing retention.
pub struct S3Blobs {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Blobs {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self { client, bucket: bucket.into() }
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), BlobError> {
        check_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| BlobError::Backend(format!("{e:?}")))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        check_key(key)?;
        match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => {
                let bytes = out.body.collect().await.map_err(|e| BlobError::Backend(e.to_string()))?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(BlobError::Backend(format!("{e:?}"))),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| BlobError::Backend(format!("{e:?}")))?;
        Ok(())
    }

    /// A presigned GET: S3 itself refuses it once `valid_for` has passed (the signing time is the real
    /// time, as S3 checks it against its own clock).
    async fn download_link(&self, key: &str, valid_for: Duration, _now: DateTime<Utc>) -> Result<String, BlobError> {
        check_key(key)?;
        let config = PresigningConfig::expires_in(valid_for).map_err(|e| BlobError::Backend(e.to_string()))?;
        let presigned = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| BlobError::Backend(format!("{e:?}")))?;
        Ok(presigned.uri().to_owned())
    }
}

/// A folder on disk (`make run`: `$INFEREX_DATA_DIR/blobs`). Download links point at the local server
/// (`{public_base}/_blobs/{key}?expires=..&signature=..`) and carry an HMAC of the key and expiry under a
/// local secret, checked by [`LocalBlobs::open_link`].
pub struct LocalBlobs {
    root: PathBuf,
    public_base: String,
    link_key: Vec<u8>,
}

/// Where the dev server serves local download links.
pub const LOCAL_LINK_PATH: &str = "/_blobs/";
/// The dev server's route for them.
pub const LOCAL_LINK_ROUTE: &str = "/_blobs/{*key}";

impl LocalBlobs {
    pub fn new(root: &Path, public_base: impl Into<String>, link_key: Vec<u8>) -> Self {
        Self { root: root.to_owned(), public_base: public_base.into(), link_key }
    }

    fn link_signature(&self, key: &str, expires: i64) -> Result<String, BlobError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.link_key).map_err(|e| BlobError::Backend(e.to_string()))?;
        mac.update(format!("{key}\n{expires}").as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    /// The blob behind a download link, if the link is genuine and unexpired; `None` otherwise (a wrong
    /// signature, an expired link and a missing blob look the same to the holder).
    pub async fn open_link(
        &self,
        key: &str,
        expires: i64,
        signature: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<u8>>, BlobError> {
        check_key(key)?;
        let expected = self.link_signature(key, expires)?;
        if expires <= now.timestamp() || !crate::secrets::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
            return Ok(None);
        }
        self.get(key).await
    }

    /// Deletes blobs under `prefix` last written before `cutoff` (S3 does this with a lifecycle rule).
    pub async fn purge_older_than(&self, prefix: &str, cutoff: std::time::SystemTime) -> Result<usize, BlobError> {
        check_key(prefix)?;
        let mut removed = 0;
        let mut pending = vec![self.root.join(prefix)];
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BlobError::Backend(e.to_string())),
            };
            while let Some(entry) = entries.next_entry().await.map_err(|e| BlobError::Backend(e.to_string()))? {
                let meta = entry.metadata().await.map_err(|e| BlobError::Backend(e.to_string()))?;
                if meta.is_dir() {
                    pending.push(entry.path());
                } else if meta.modified().is_ok_and(|at| at < cutoff) {
                    tokio::fs::remove_file(entry.path()).await.map_err(|e| BlobError::Backend(e.to_string()))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put(&self, key: &str, bytes: Vec<u8>, _content_type: &str) -> Result<(), BlobError> {
        check_key(key)?;
        let path = self.root.join(key);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| BlobError::Backend(e.to_string()))?;
        }
        tokio::fs::write(&path, bytes).await.map_err(|e| BlobError::Backend(e.to_string()))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        check_key(key)?;
        match tokio::fs::read(self.root.join(key)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlobError::Backend(e.to_string())),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        match tokio::fs::remove_file(self.root.join(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlobError::Backend(e.to_string())),
        }
    }

    async fn download_link(&self, key: &str, valid_for: Duration, now: DateTime<Utc>) -> Result<String, BlobError> {
        check_key(key)?;
        let expires = now.timestamp().saturating_add(i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX));
        let signature = self.link_signature(key, expires)?;
        Ok(format!("{}{LOCAL_LINK_PATH}{key}?expires={expires}&signature={signature}", self.public_base))
    }

    fn local(&self) -> Option<&LocalBlobs> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_store() {
        for bad in ["", "/abs", "a/../b", "a//b", "a/./b", "a b", "a\\b"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_key("razorpay/events/2026/11/27/evt_1.json").is_ok());
    }

    fn local_blobs() -> (LocalBlobs, PathBuf) {
        let root = std::env::temp_dir().join(format!("inferex-blobs-{}", crate::secrets::random_suffix()));
        (LocalBlobs::new(&root, "http://127.0.0.1:8080", b"link key".to_vec()), root)
    }

    #[tokio::test]
    async fn local_blobs_round_trip() -> Result<(), BlobError> {
        let (blobs, root) = local_blobs();
        assert_eq!(blobs.get("a/b.json").await?, None);
        blobs.put("a/b.json", b"{}".to_vec(), "application/json").await?;
        assert_eq!(blobs.get("a/b.json").await?, Some(b"{}".to_vec()));
        blobs.delete("a/b.json").await?;
        blobs.delete("a/b.json").await?;
        assert_eq!(blobs.get("a/b.json").await?, None);
        let _ = std::fs::remove_dir_all(root);
        Ok(())
    }

    #[tokio::test]
    async fn old_blobs_under_a_prefix_are_purged() -> Result<(), BlobError> {
        let (blobs, root) = local_blobs();
        blobs.put("exports/u/old.json", b"{}".to_vec(), "application/json").await?;
        blobs.put("razorpay/e.json", b"{}".to_vec(), "application/json").await?;
        let future = std::time::SystemTime::now() + Duration::from_secs(60);
        assert_eq!(blobs.purge_older_than("exports", std::time::SystemTime::UNIX_EPOCH).await?, 0, "nothing that old");
        assert_eq!(blobs.purge_older_than("exports", future).await?, 1);
        assert_eq!(blobs.get("exports/u/old.json").await?, None);
        assert!(blobs.get("razorpay/e.json").await?.is_some(), "other prefixes are untouched");
        let _ = std::fs::remove_dir_all(root);
        Ok(())
    }

    #[tokio::test]
    async fn local_links_open_only_while_valid_and_unaltered() -> Result<(), BlobError> {
        let (blobs, root) = local_blobs();
        blobs.put("exports/u/e.json", b"{\"a\":1}".to_vec(), "application/json").await?;
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let link = blobs.download_link("exports/u/e.json", Duration::from_secs(900), now).await?;
        let query = link.split_once('?').map(|(_, q)| q).unwrap_or_default();
        assert!(link.starts_with("http://127.0.0.1:8080/_blobs/exports/u/e.json?"), "{link}");
        let param = |name: &str| {
            query.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('='))).unwrap_or("")
        };
        let (expires, signature) = (param("expires").parse().unwrap_or(0), param("signature"));
        assert_eq!(expires, now.timestamp() + 900);
        let open = |key: &'static str, expires: i64, signature: String, at: DateTime<Utc>| {
            let blobs = &blobs;
            async move { blobs.open_link(key, expires, &signature, at).await }
        };
        assert!(open("exports/u/e.json", expires, signature.into(), now).await?.is_some());
        let later = now + chrono::Duration::seconds(900);
        assert!(open("exports/u/e.json", expires, signature.into(), later).await?.is_none(), "expired");
        assert!(open("exports/u/e.json", expires + 60, signature.into(), now).await?.is_none(), "extended");
        assert!(open("exports/v/e.json", expires, signature.into(), now).await?.is_none(), "another blob");
        let _ = std::fs::remove_dir_all(root);
        Ok(())
    }
}
