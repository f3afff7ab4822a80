//! The API surface is declared in three places besides the code: openapi.yaml (for users), template.yaml
//! (API Gateway routes) and the `cargo lambda watch` router in Cargo.toml. These tests keep all of them
//! equal, and check that the composed app really serves every documented route.

use std::collections::BTreeSet;

use e2e::{Backend, TestApi, TestResult};
use serde_yaml::Value;

type Routes = BTreeSet<(String, String)>;

fn read(path: &str) -> Result<String, std::io::Error> {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR")))
}

fn openapi_routes() -> Result<Routes, Box<dyn std::error::Error + Send + Sync>> {
    let doc: Value = serde_yaml::from_str(&read("openapi.yaml")?)?;
    let mut routes = Routes::new();
    for (path, operations) in doc["paths"].as_mapping().into_iter().flatten() {
        for (method, _) in operations.as_mapping().into_iter().flatten() {
            routes.insert((
                method.as_str().unwrap_or_default().to_uppercase(),
                path.as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    Ok(routes)
}

fn template_routes() -> Result<Routes, Box<dyn std::error::Error + Send + Sync>> {
    let doc: Value = serde_yaml::from_str(&read("template.yaml")?)?;
    let mut routes = Routes::new();
    for (_, resource) in doc["Resources"].as_mapping().into_iter().flatten() {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        for (_, event) in resource["Properties"]["Events"].as_mapping().into_iter().flatten() {
            if event["Type"] == "Api" {
                let p = &event["Properties"];
                routes.insert((
                    p["Method"].as_str().unwrap_or_default().to_uppercase(),
                    p["Path"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    Ok(routes)
}

fn watch_routes() -> Result<Routes, Box<dyn std::error::Error + Send + Sync>> {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")?)?;
    let router = manifest
        .get("workspace")
        .and_then(|w| w.get("metadata"))
        .and_then(|m| m.get("lambda"))
        .and_then(|l| l.get("watch"))
        .and_then(|w| w.get("router"))
        .and_then(|r| r.as_table())
        .ok_or("Cargo.toml has no [workspace.metadata.lambda.watch.router]")?;
    let mut routes = Routes::new();
    for (path, targets) in router {
        for target in targets.as_array().into_iter().flatten() {
            let method = target.get("method").and_then(|m| m.as_str()).unwrap_or_default();
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    Ok(routes)
}

#[test]
fn openapi_template_and_watch_router_declare_the_same_routes() -> TestResult {
    let documented = openapi_routes()?;
    assert!(!documented.is_empty());
    assert_eq!(template_routes()?, documented, "template.yaml API events vs openapi.yaml");
    assert_eq!(watch_routes()?, documented, "cargo lambda watch router vs openapi.yaml");
    Ok(())
}

#[tokio::test]
async fn the_composed_app_serves_every_documented_route() -> TestResult {
    // Operator routes exist only while an admin token is configured.
    let config = shared::config::Config {
        admin_token: Some(shared::secrets::SecretString::new(e2e::operators_secret(&[(
            "ravi@inferex.ai",
            "operator-secret",
            e2e::EVERY_ROLE,
        )]))),
        ..Default::default()
    };
    let api = TestApi::start_with(Backend::Embedded, config).await?;
    for (method, path) in openapi_routes()? {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let concrete = path
            .replace("{user_id}", "usr_sample")
            .replace("{topup_id}", "tup_sample")
            .replace("{key_id}", "key_sample");
        let response = api.http.request(method.clone(), api.url(&concrete)).send().await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(code != "not_found" && code != "method_not_allowed", "{method} {path} is not served: {status} {body}");
    }
    Ok(())
}

/// openapi.yaml's `x-error-codes` is the catalogue in `shared::error::ErrorCode`: same codes, statuses and types.
#[test]
fn openapi_lists_the_error_catalogue() -> TestResult {
    let doc: Value = serde_yaml::from_str(&read("openapi.yaml")?)?;
    let documented: BTreeSet<(String, u64, String)> = doc["x-error-codes"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(code, entry)| {
            let code = code.as_str().unwrap_or_default().to_owned();
            (code, entry["status"].as_u64().unwrap_or_default(), entry["type"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let catalogue: BTreeSet<(String, u64, String)> = shared::error::ErrorCode::ALL
        .iter()
        .map(|code| (code.as_str().to_owned(), u64::from(code.status().as_u16()), code.error_type().to_owned()))
        .collect();
    assert_eq!(catalogue.len(), shared::error::ErrorCode::ALL.len());
    assert_eq!(documented, catalogue, "openapi.yaml x-error-codes vs shared::error::ErrorCode");
    Ok(())
}
