//! The exports function's handler fed a DynamoDB stream event in AWS's format: in AWS a requested export is
//! never built by the request that asks for it, only when its stream record arrives; a record delivered
//! again builds nothing twice, and only a record whose build cannot be recorded is handed back for retry.

use std::sync::Arc;

use shared::blobs::LocalBlobs;
use shared::config::Config;
use shared::privacy::{self as rights, ExportBuilds, ExportStatus, PrivacyContext};
use shared::testing::{embedded_state, signed_in_account};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn exports_are_built_from_their_stream_record_once() -> TestResult {
    let folder = std::env::temp_dir().join(format!("inferex-exports-{}", shared::secrets::random_suffix()));
    let blobs = LocalBlobs::new(&folder, "http://127.0.0.1:9", vec![7; 32]);
    let mut state = embedded_state(Config::default())?.with_blobs(Arc::new(blobs));
    state.export_builds = ExportBuilds::Queued;
    let (user_id, _) = signed_in_account(&state, "exporter@example.in").await?;
    let context = PrivacyContext::from(&state);

    let export = rights::create_export(&context, &user_id, Default::default()).await?;
    assert_eq!(export.status, ExportStatus::Pending);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let view = rights::export_view(&context, &user_id, &export.id, None).await?;
    assert_eq!(view.status, ExportStatus::Pending, "queued: the request builds nothing itself");
    assert!(view.download_url.is_none());

    let event: serde_json::Value = serde_json::from_str(
        &include_str!("fixtures/dynamodb-stream-export-insert.json")
            .replace("USER_ID", &user_id)
            .replace("EXPORT_ID", &export.id),
    )?;
    let answer = privacy::build_requested_exports(&context, &event).await;
    // The record of an export that is not stored cannot be built: handed back; the MODIFY is ignored.
    assert_eq!(answer["batchItemFailures"], serde_json::json!([{ "itemIdentifier": "111200000000012345678902" }]));
    let view = rights::export_view(&context, &user_id, &export.id, None).await?;
    assert_eq!(view.status, ExportStatus::Ready);
    let size = view.size_bytes.ok_or("no size")?;
    assert!(view.download_url.is_some_and(|link| link.contains(&export.id)));
    let requests = rights::requests(state.store(), &user_id, 10).await?;
    assert_eq!(requests.len(), 1);
    assert_eq!(serde_json::to_value(&requests[0])?["status"], "completed");

    // Delivered again (Lambda retries a batch): the export stands as built, nothing is recorded twice.
    privacy::build_requested_exports(&context, &event).await;
    let again = rights::export_view(&context, &user_id, &export.id, None).await?;
    assert_eq!((again.status, again.size_bytes), (ExportStatus::Ready, Some(size)));
    assert_eq!(rights::requests(state.store(), &user_id, 10).await?.len(), 1);
    let _ = std::fs::remove_dir_all(&folder);
    Ok(())
}

#[test]
fn the_exports_function_refuses_to_start_without_the_vault_key() -> TestResult {
    let (ok, out) = shared::testing::cold_start(env!("CARGO_BIN_EXE_exports"), &[("INFEREX_BLOB_BUCKET", "exports")])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("INFEREX_KMS_KEY_ID"), "{out}");
    Ok(())
}

#[tokio::test]
async fn an_export_whose_build_never_comes_fails_instead_of_staying_pending() -> TestResult {
    let clock = Arc::new(shared::clock::ManualClock::starting_now());
    let store = shared::testing::sqlite_store(clock.clone())?;
    let folder = std::env::temp_dir().join(format!("inferex-exports-{}", shared::secrets::random_suffix()));
    let blobs = LocalBlobs::new(&folder, "http://127.0.0.1:9", vec![7; 32]);
    let mut state = shared::state::AppState::new(Arc::new(store), Config::default(), clock.clone())
        .with_kyc_keys(shared::state::KycKeys::ephemeral())
        .with_blobs(Arc::new(blobs));
    state.export_builds = ExportBuilds::Queued;
    let (user_id, _) = signed_in_account(&state, "waiting@example.in").await?;
    let context = PrivacyContext::from(&state);
    let export = rights::create_export(&context, &user_id, Default::default()).await?;

    clock.advance(chrono::Duration::minutes(29));
    assert_eq!(rights::export_view(&context, &user_id, &export.id, None).await?.status, ExportStatus::Pending);
    clock.advance(chrono::Duration::minutes(2));
    let view = rights::export_view(&context, &user_id, &export.id, None).await?;
    assert_eq!(view.status, ExportStatus::Failed, "its stream record is lost: the owner asks again");
    let requests = rights::requests(state.store(), &user_id, 10).await?;
    assert_eq!(serde_json::to_value(&requests[0])?["status"], "failed");

    // A record that arrives after all builds nothing over the failure.
    assert_eq!(rights::build_export(&context, &user_id, &export.id).await?, ExportStatus::Failed);
    assert!(!folder.join("exports").exists(), "no file was written");
    let _ = std::fs::remove_dir_all(&folder);
    Ok(())
}
