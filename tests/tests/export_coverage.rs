//! The data export holds everything, on both stores: every class of stored item (walked from the code,
//! `ItemClass::iter()`) is a section of a real export or says why it is not; the processors are listed;
//! nothing is cut short; the document follows `docs/export.schema.json`.

use e2e::{Backend, TestApi, TestResult, on_both_stores};
use serde_json::{Value, json};
use shared::privacy::coverage::{InExport, in_export};
use shared::retention::ItemClass;
use shared::store::{Condition, Item, Put, Table, schema};
use strum::IntoEnumIterator;

on_both_stores!(the_export_covers_every_class_and_cuts_nothing_short);

/// More login records than the export once showed (it stopped at 1,000).
const LOGINS: usize = 1_010;

async fn the_export_covers_every_class_and_cuts_nothing_short(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("everything@example.in").await?;
    api.fund(&token, 500).await?;
    api.create_key(&token, "ci").await?;
    let nominee = api.http.put(api.url("/v1/account/nominee")).bearer_auth(&token);
    nominee.json(&json!({ "name": "Meera Rao", "email": "meera@example.in" })).send().await?.error_for_status()?;
    let grievance = api.http.post(api.url("/v1/privacy/requests")).bearer_auth(&token);
    grievance
        .json(&json!({ "kind": "grievance", "message": "Why was I charged twice?" }))
        .send()
        .await?
        .error_for_status()?;
    let now = api.clock_now();
    for n in 0..LOGINS {
        let attempt = json!({ "email": "everything@example.in", "user_id": user, "ip": "203.0.113.9",
            "success": true, "outcome": "success", "at": now - chrono::Duration::seconds(n as i64) });
        let sk = schema::time_sort_key(schema::prefix::LOGIN, now - chrono::Duration::seconds(n as i64));
        let item = Item::from_record(schema::user_pk(&user), sk, &attempt, None)?;
        api.state.store.put(Put { table: Table::Main, item, condition: Condition::Always }).await?;
    }

    let ctx: shared::privacy::PrivacyContext = (&api.state).into();
    let document = shared::privacy::export_document(&ctx, &user, false).await?;
    let sections = document.as_object().ok_or("the export is not an object")?;
    for class in ItemClass::iter() {
        match in_export(class) {
            InExport::Section(name) => assert!(sections.contains_key(name), "{class:?}: no section {name}"),
            InExport::Left(reason) => {
                assert!(!reason.is_empty(), "{class:?} is left out of the export without a reason")
            }
        }
    }
    let logins = document["login_history"].as_array().ok_or("no login history")?;
    assert!(logins.len() > LOGINS, "every login is exported: {}", logins.len());

    // Who else got the data: our processors and every model provider of the catalog.
    let processors: Vec<&str> =
        document["processors"].as_array().ok_or("no processors")?.iter().filter_map(|p| p["name"].as_str()).collect();
    for name in ["Razorpay", "Cashfree", "Amazon Web Services"] {
        assert!(processors.iter().any(|p| p.contains(name)), "{name} is not among {processors:?}");
    }
    let catalog = shared::catalog::Catalog::builtin()?;
    assert_eq!(processors.len(), 4 + catalog.providers.len(), "{processors:?}");

    // The payment with the payer's details Razorpay reported; the sections that hold a person's things.
    assert_eq!(document["payments"][0]["payer"]["vpa"], json!("success@razorpay"));
    assert_eq!(document["payments"][0]["payer"]["contact"], json!("+919000090000"));
    assert!(!document["sessions"].as_array().ok_or("no sessions")?.is_empty());
    assert_eq!(document["nominee"]["name"], json!("Meera Rao"));
    assert_eq!(document["privacy_requests"][0]["kind"], json!("grievance"));
    assert_eq!(document["mail"]["suppressed"], Value::Null);

    // The published schema accepts it, and refuses a document missing a section.
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/export.schema.json"),
    )?)?;
    let validator = jsonschema::validator_for(&schema)?;
    let errors: Vec<String> = validator.iter_errors(&document).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let mut without = document.clone();
    without.as_object_mut().ok_or("not an object")?.remove("processors");
    assert!(!validator.is_valid(&without), "the schema requires processors");
    Ok(())
}
