//! template.yaml and the code that creates tables for local runs must describe the same schema.

use serde_yaml::Value;
use shared::store::{EXPIRES_AT, PK, SK, Table};

fn template() -> Result<Value, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))?;
    Ok(serde_yaml::from_str(&text)?)
}

fn resource_name(table: Table) -> &'static str {
    match table {
        Table::Main => "MainTable",
        Table::Vault => "VaultTable",
    }
}

#[test]
fn every_table_has_the_code_key_schema_ttl_encryption_and_recovery() -> Result<(), Box<dyn std::error::Error>> {
    let doc = template()?;
    for table in Table::ALL {
        let resource = &doc["Resources"][resource_name(table)];
        assert_eq!(resource["Type"], Value::from("AWS::DynamoDB::Table"), "{table:?}");
        let p = &resource["Properties"];
        let keys: Vec<(String, String)> = p["KeySchema"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|k| {
                (
                    k["AttributeName"].as_str().unwrap_or_default().to_owned(),
                    k["KeyType"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert_eq!(keys, [(PK.to_owned(), "HASH".to_owned()), (SK.to_owned(), "RANGE".to_owned())]);
        for definition in p["AttributeDefinitions"].as_sequence().into_iter().flatten() {
            assert_eq!(definition["AttributeType"], Value::from("S"), "keys are strings");
        }
        assert_eq!(p["TimeToLiveSpecification"]["AttributeName"], Value::from(EXPIRES_AT));
        assert_eq!(p["TimeToLiveSpecification"]["Enabled"], Value::from(true));
        assert_eq!(p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], Value::from(true));
        assert_eq!(p["SSESpecification"]["SSEEnabled"], Value::from(true));
        assert_eq!(p["BillingMode"], Value::from("PAY_PER_REQUEST"));
    }
    Ok(())
}

#[test]
fn functions_run_rust_on_arm64_al2023() -> Result<(), Box<dyn std::error::Error>> {
    let doc = template()?;
    let globals = &doc["Globals"]["Function"];
    assert_eq!(globals["Runtime"], Value::from("provided.al2023"));
    assert_eq!(globals["Architectures"][0], Value::from("arm64"));
    let functions: Vec<&Value> = doc["Resources"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(_, r)| r)
        .filter(|r| r["Type"] == "AWS::Serverless::Function")
        .collect();
    assert!(!functions.is_empty());
    for f in functions {
        assert_eq!(f["Metadata"]["BuildMethod"], Value::from("rust-cargolambda"));
        assert!(f["Metadata"]["BuildProperties"]["Binary"].is_string());
    }
    Ok(())
}

/// Every deadline of an inference call is derived from the function's timeout; the template must give the
/// function exactly that timeout, so that no settlement is cut off by the platform.
#[test]
fn the_inference_function_timeout_is_the_one_the_gateway_plans_for() -> Result<(), Box<dyn std::error::Error>> {
    use shared::inference::{FUNCTION_TIMEOUT, SETTLE_BUDGET, UPSTREAM_DEADLINE};
    let doc = template()?;
    let timeout = doc["Resources"]["InferenceFunction"]["Properties"]["Timeout"].as_u64();
    assert_eq!(timeout, Some(FUNCTION_TIMEOUT.as_secs()));
    assert!(UPSTREAM_DEADLINE + SETTLE_BUDGET < FUNCTION_TIMEOUT, "a margin is left after settlement");
    Ok(())
}

/// Secrets reach functions only as ARNs read at run time: no secret-bearing variable, no resolved secret
/// value in any `Environment`, no secret shipped with a value, and every secret ARN a function is given
/// is one its role may read.
#[test]
fn no_secret_value_reaches_a_function_through_its_environment() -> Result<(), Box<dyn std::error::Error>> {
    let doc = template()?;
    let resources = doc["Resources"].as_mapping().ok_or("no Resources")?;
    let mut environments = vec![("Globals".to_owned(), doc["Globals"]["Function"]["Environment"]["Variables"].clone())];
    for (name, resource) in resources {
        let name = name.as_str().unwrap_or_default().to_owned();
        environments.push((name.clone(), resource["Properties"]["Environment"]["Variables"].clone()));
        if resource["Type"] == "AWS::SecretsManager::Secret" {
            let properties = &resource["Properties"];
            assert!(properties.get("SecretString").is_none(), "{name} ships a secret value");
            assert!(properties.get("GenerateSecretString").is_some(), "{name} must start as a generated value");
        }
    }
    let mut secret_arns = 0;
    for (name, variables) in environments {
        for (variable, value) in variables.as_mapping().into_iter().flatten() {
            let variable = variable.as_str().unwrap_or_default();
            let rendered = serde_yaml::to_string(value)?;
            assert!(!shared::runtime_secrets::SECRET_ENV_VARS.contains(&variable), "{name} sets {variable}");
            assert!(
                !rendered.contains("resolve:secretsmanager") && !rendered.contains("resolve:ssm-secure"),
                "{name}: {variable}"
            );
            if variable.ends_with("_SECRET_ARN") {
                secret_arns += 1;
                let secret = rendered.trim().trim_start_matches("!Ref").trim().to_owned();
                let function = serde_yaml::to_string(&doc["Resources"][name.as_str()])?;
                let role = doc["Resources"][name.as_str()]["Properties"]["Role"].clone();
                let role_name = serde_yaml::to_string(&role)?.replace("!GetAtt", "").replace(".Arn", "");
                let role = serde_yaml::to_string(&doc["Resources"][role_name.trim()])?;
                let grants = |text: &str| {
                    text.contains("secretsmanager:GetSecretValue") && text.contains(&format!("Resource: !Ref {secret}"))
                };
                assert!(grants(&function) || grants(&role), "{name} is given {secret} but may not read it");
            }
        }
    }
    assert!(secret_arns >= 5, "wallet, webhook, jobs, kyc and inference read their secrets by ARN");
    Ok(())
}
