//! The blob port: raw webhook payloads (and later data exports). S3 in production, a local folder for the
//! embedded default.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;

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
}

/// A folder on disk (`make run`: `$INFEREX_DATA_DIR/blobs`).
pub struct LocalBlobs {
    root: PathBuf,
}

impl LocalBlobs {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_owned() }
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

    #[tokio::test]
    async fn local_blobs_round_trip() -> Result<(), BlobError> {
        let root = std::env::temp_dir().join(format!("inferex-blobs-{}", crate::secrets::random_suffix()));
        let blobs = LocalBlobs::new(&root);
        assert_eq!(blobs.get("a/b.json").await?, None);
        blobs.put("a/b.json", b"{}".to_vec(), "application/json").await?;
        assert_eq!(blobs.get("a/b.json").await?, Some(b"{}".to_vec()));
        let _ = std::fs::remove_dir_all(root);
        Ok(())
    }
}
