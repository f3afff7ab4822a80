//! The S3 adapter of the blob port, against moto's S3 (started by `make test`).

use shared::blobs::BlobStore;
use shared::testing::moto_s3_blobs;

#[tokio::test]
async fn s3_blobs_round_trip_and_refuse_unsafe_keys() -> Result<(), Box<dyn std::error::Error>> {
    let blobs = moto_s3_blobs().await?;
    assert_eq!(blobs.get("razorpay/webhooks/2026/11/27/evt_1.json").await?, None);
    blobs.put("razorpay/webhooks/2026/11/27/evt_1.json", b"{\"a\":1}".to_vec(), "application/json").await?;
    assert_eq!(blobs.get("razorpay/webhooks/2026/11/27/evt_1.json").await?, Some(b"{\"a\":1}".to_vec()));
    assert!(blobs.put("../escape", b"x".to_vec(), "text/plain").await.is_err());
    Ok(())
}

#[tokio::test]
async fn s3_download_links_fetch_the_object_and_deletes_remove_it() -> Result<(), Box<dyn std::error::Error>> {
    let blobs = moto_s3_blobs().await?;
    let key = "exports/usr_1/exp_1.json";
    blobs.put(key, b"{\"export\":true}".to_vec(), "application/json").await?;
    let link = blobs.download_link(key, std::time::Duration::from_secs(900), chrono::Utc::now()).await?;
    assert!(link.contains("X-Amz-Expires=900") && link.contains("X-Amz-Signature="), "{link}");
    let fetched = reqwest::get(&link).await?;
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await?.as_ref(), b"{\"export\":true}");
    blobs.delete(key).await?;
    blobs.delete(key).await?;
    assert_eq!(blobs.get(key).await?, None);
    Ok(())
}
