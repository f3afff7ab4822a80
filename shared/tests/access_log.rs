//! The access line every function writes per request (`shared::http::log_access`), fed real API Gateway
//! events through the service a function runs, with the Lambda log format: behind CloudFront it names the
//! browser's address, never the edge server's, and only when the request proves it came through our
//! distribution; it never holds a path's identifiers, a query string or a credential.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use shared::config::Config;
use shared::secrets::SecretString;
use shared::testing::{embedded_state, invoke_lambda};
use tracing_subscriber::EnvFilter;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const EDGE_SERVER: &str = "130.176.98.21";
const BROWSER: &str = "2406:2d40:728d:fa10::c4a";

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A REST API (v1) event for `GET /prod<path>` from `source_ip`, with these headers.
fn event(path_and_query: &str, source_ip: &str, headers: &[(&str, &str)]) -> String {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let query: Option<Value> = query.split_once('=').map(|(k, v)| json!({ k: v }));
    let mut all = json!({ "Host": "abcdef1234.execute-api.ap-south-1.amazonaws.com" });
    for (name, value) in headers {
        all[*name] = json!(value);
    }
    let multi: serde_json::Map<String, Value> =
        all.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), json!([v]))).collect();
    json!({
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": "GET",
        "headers": all,
        "multiValueHeaders": multi,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": null,
        "pathParameters": { "proxy": path.trim_start_matches('/') },
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012",
            "resourceId": "r3s0urc3",
            "stage": "prod",
            "requestId": "7d1e5a52-7b62-11e6-9a41-93e8deadbeef",
            "requestTimeEpoch": 1_795_600_000_000_i64,
            "identity": { "sourceIp": source_ip },
            "resourcePath": "/{proxy+}",
            "httpMethod": "GET",
            "apiId": "abcdef1234",
            "path": format!("/prod{path}"),
            "protocol": "HTTP/1.1"
        },
        "body": null,
        "isBase64Encoded": false
    })
    .to_string()
}

/// Runs one event through a function's app with the Lambda log format, returning the answer's status and
/// everything logged.
async fn logged(event: &str, edge_secret: &str) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let state = embedded_state(Config::default())?.with_edge_secret(SecretString::new(edge_secret.to_owned()));
    let app = shared::http::finish(axum::Router::new(), state);
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = shared::telemetry::lambda_subscriber(EnvFilter::new("info"), move || writer.clone());
    let answer = {
        let _guard = tracing::subscriber::set_default(subscriber);
        invoke_lambda(app, event).await?
    };
    let text = String::from_utf8(lines.0.lock().map_err(|_| "poisoned")?.clone())?;
    Ok((answer.status.as_u16(), text))
}

/// The one access line among the logged lines, as CloudWatch would index it.
fn access_line(text: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let mut access = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"][shared::http::ACCESS_FIELD] == json!(true));
    let line = access.next().ok_or_else(|| format!("no access line in {text}"))?;
    assert!(access.next().is_none(), "one access line per request: {text}");
    Ok(line["fields"].clone())
}

#[tokio::test]
async fn behind_cloudfront_the_access_line_names_the_browser_not_the_edge_server() -> TestResult {
    let secret = shared::secrets::random_token();
    let proven = [("X-Inferex-Edge", secret.as_str()), ("X-Inferex-Viewer-Ip", BROWSER)];
    let (status, text) = logged(&event("/health", EDGE_SERVER, &proven), &secret).await?;
    assert_eq!(status, 200);
    let line = access_line(&text)?;
    assert_eq!(line["ip"], BROWSER, "{text}");
    assert_eq!(line["request_id"], "7d1e5a52-7b62-11e6-9a41-93e8deadbeef", "joins API Gateway's own line");
    assert_eq!(
        (line["method"].as_str(), line["route"].as_str(), line["status"].as_u64()),
        (Some("GET"), Some("/health"), Some(200))
    );
    assert!(line["latency_ms"].is_u64(), "{line}");
    assert!(!text.contains(&secret), "the edge secret is never logged");
    Ok(())
}

#[tokio::test]
async fn without_the_edge_proof_the_access_line_names_the_connecting_address() -> TestResult {
    let secret = shared::secrets::random_token();
    for forged in ["a-guessed-edge-secret", ""] {
        let headers = [("X-Inferex-Edge", forged), ("X-Inferex-Viewer-Ip", "198.51.100.77")];
        let (_, text) = logged(&event("/health", "203.0.113.7", &headers), &secret).await?;
        assert_eq!(access_line(&text)?["ip"], "203.0.113.7", "forged proof {forged:?}: {text}");
    }
    Ok(())
}

#[tokio::test]
async fn the_access_line_holds_no_path_identifier_query_or_credential() -> TestResult {
    let secret = shared::secrets::random_token();
    let api_key = format!("sk-live-{}", shared::secrets::random_token());
    let bearer = format!("Bearer {api_key}");
    let headers = [("Authorization", bearer.as_str()), ("User-Agent", "probe/1.0")];
    let (status, text) =
        logged(&event("/v1/keys/key_8f2a91c0?token=qs-credential", "203.0.113.7", &headers), &secret).await?;
    assert_eq!(status, 404);
    let line = access_line(&text)?;
    assert_eq!((line["route"].as_str(), line["status"].as_u64()), (Some("(no route)"), Some(404)), "{line}");
    for held in [api_key.as_str(), "key_8f2a91c0", "qs-credential", "probe/1.0"] {
        assert!(!line.to_string().contains(held), "{held} in the access line {line}");
    }
    Ok(())
}
