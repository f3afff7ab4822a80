//! What `openapi.yaml` promises at the edges: an empty `cursor=` is no cursor (the first page), a GET of
//! the unsubscribe page without its token is a 400 naming `token`, not a page with nothing to confirm, and a
//! chat request whose messages are not all objects is a 400 naming `messages`, charged nothing.

use e2e::{Backend, TestApi, TestResult};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn an_empty_cursor_is_the_first_page() -> TestResult {
    let api = TestApi::start(Backend::Embedded).await?;
    let (_, token) = api.verified_user("cursor@example.in").await?;
    for path in ["/v1/wallet/transactions?cursor=", "/v1/usage?cursor=", "/v1/wallet/transactions"] {
        let answer = api.http.get(api.url(path)).bearer_auth(&token).send().await?;
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        assert_eq!(answer.json::<Value>().await?["object"], "list", "{path}");
    }
    let bad = api.http.get(api.url("/v1/usage?cursor=not-ours")).bearer_auth(&token).send().await?;
    assert_eq!(bad.json::<Value>().await?["error"]["code"], "invalid_cursor", "a cursor we did not return still fails");
    Ok(())
}

#[tokio::test]
async fn the_unsubscribe_page_needs_its_token() -> TestResult {
    let api = TestApi::start(Backend::Embedded).await?;
    for path in ["/v1/unsubscribe", "/v1/unsubscribe?token="] {
        let answer = api.http.get(api.url(path)).send().await?;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{path}");
        let error: Value = answer.json().await?;
        assert_eq!(
            (error["error"]["code"].as_str(), error["error"]["param"].as_str()),
            (Some("invalid_token"), Some("token"))
        );
    }
    let with_token = api.http.get(api.url("/v1/unsubscribe?token=abc")).send().await?;
    assert_eq!(with_token.status(), StatusCode::OK, "the confirmation page, which changes nothing by itself");
    Ok(())
}

#[tokio::test]
async fn chat_messages_must_be_objects() -> TestResult {
    let api = TestApi::start(Backend::Embedded).await?;
    let (user, token) = api.verified_user("messages@example.in").await?;
    api.fund(&token, 100).await?;
    let key = api.create_key(&token, "tests").await?;
    let before = api.ledger_checked_balance(&user).await?;
    for messages in [json!(["hello"]), json!([{"role": "user", "content": "hi"}, null]), json!([[]])] {
        let body = json!({"model": "llama-3.1-8b", "messages": messages});
        let answer = api.http.post(api.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await?;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{messages}");
        let error: Value = answer.json().await?;
        assert_eq!(
            (error["error"]["code"].as_str(), error["error"]["param"].as_str()),
            (Some("invalid_type"), Some("messages")),
            "{error}"
        );
    }
    assert_eq!(api.ledger_checked_balance(&user).await?, before, "a refused request moves no money");
    Ok(())
}
