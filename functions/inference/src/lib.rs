//! The inference function: OpenAI-compatible `/v1/models`, `/v1/chat/completions` and `/v1/completions`,
//! authenticated by API key, streamed or not. Billing, routing and usage live in `shared::inference`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use shared::error::{ApiError, ApiResult};
use shared::http::{JsonBody, ListPage};
use shared::inference::{self, Answer, Endpoint, MAX_INFERENCE_BODY_BYTES};
use shared::ports::Ports;
use shared::secrets::random_suffix;
use shared::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
}

pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

/// Every inference response, error or not, carries the request id that the usage log records.
fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let request_id = format!("req_{}", random_suffix());
    let result: ApiResult<Json<ListPage<Value>>> = async {
        let gateway = state.gateway()?;
        gateway.authenticate(&Ports::from(&state), shared::http::bearer_token(&headers)).await?;
        let data: Vec<Value> = gateway
            .catalog
            .models
            .iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "object": "model",
                    "created": 0,
                    "owned_by": m.routes.first().map(|r| r.provider.as_str()).unwrap_or("inferex"),
                    "context_length": m.context_length,
                    "max_output_tokens": m.max_output_tokens,
                    "pricing": {
                        "currency": "INR",
                        "input_paise_per_million_tokens": m.input_paise_per_million,
                        "output_paise_per_million_tokens": m.output_paise_per_million,
                    },
                })
            })
            .collect();
        Ok(Json(ListPage::all(data)))
    }
    .await;
    with_request_id(result.into_response(), &request_id)
}

async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<Value, MAX_INFERENCE_BODY_BYTES>, ApiError>,
) -> Response {
    serve(state, headers, body, Endpoint::ChatCompletions).await
}

async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<Value, MAX_INFERENCE_BODY_BYTES>, ApiError>,
) -> Response {
    serve(state, headers, body, Endpoint::Completions).await
}

async fn serve(
    state: AppState,
    headers: HeaderMap,
    body: Result<JsonBody<Value, MAX_INFERENCE_BODY_BYTES>, ApiError>,
    endpoint: Endpoint,
) -> Response {
    let request_id = format!("req_{}", random_suffix());
    let result: ApiResult<Response> = async {
        let gateway = state.gateway()?;
        // Authentication comes first: an anonymous caller learns nothing about models or bodies.
        let context = Ports::from(&state);
        let owner = gateway.authenticate(&context, shared::http::bearer_token(&headers)).await?;
        gateway.note_use(&context, &owner);
        let JsonBody(body) = body?;
        let prepared = inference::prepare(gateway, endpoint, body, request_id.clone())?;
        // The call runs on a task of its own: a client that hangs up before the answer cancels neither the
        // call nor its settlement.
        let call_state = state.clone();
        let call = shared::tasks::spawn("inference call", async move {
            let request_id = prepared.request_id.clone();
            let gateway = call_state.gateway()?;
            let answer = inference::call(&context, gateway, owner, prepared).await;
            if let Err(e) = &answer {
                tracing::info!(%request_id, error = %e, "inference call failed");
            }
            answer
        });
        let answer = call.await.map_err(|e| ApiError::Internal(format!("inference call: {e}")))??;
        match answer {
            Answer::Complete(done) => {
                let status = StatusCode::from_u16(done.status).unwrap_or(StatusCode::OK);
                Ok((status, Json(done.body)).into_response())
            }
            Answer::Stream(events) => {
                let stream =
                    futures_util::stream::unfold(events, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
                let mut response = Response::new(Body::from_stream(stream));
                let h = response.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                Ok(response)
            }
        }
    }
    .await;
    with_request_id(result.into_response(), &request_id)
}
