//! The Lambda Runtime API (version 2018-06-01) of one instance, as its binary's runtime client calls it:
//! the next invocation, its response (buffered, or streamed in Lambda's HTTP integration format: a JSON
//! prelude, eight NUL bytes, the body), its error, and an error at initialisation.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::instances::{Answer, Failure, Instance, Pool};

/// Lambda's limit on a buffered response payload (6 MB).
const BUFFERED_RESPONSE_MAX_BYTES: usize = 6 * 1024 * 1024;
/// What separates the prelude of a streamed HTTP response from its body.
const PRELUDE_END: [u8; 8] = [0; 8];
const PRELUDE_MAX_BYTES: usize = 64 * 1024;
const STREAMING_MODE: &str = "lambda-runtime-function-response-mode";

type Shared = (Arc<Pool>, Arc<Instance>);

/// Serves the instance's runtime API on `listener` until the instance ends (the task is aborted then).
pub fn serve(
    listener: tokio::net::TcpListener,
    pool: Arc<Pool>,
    instance: Arc<Instance>,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state((pool, instance));
    shared::tasks::spawn("fleet runtime api", async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "an instance's runtime API stopped");
        }
    })
}

async fn next(State((pool, instance)): State<Shared>) -> Response {
    let Some(handed) = instance.next(&pool).await else {
        return StatusCode::GONE.into_response();
    };
    let deadline_ms = handed.deadline.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    put("lambda-runtime-aws-request-id", handed.id.clone());
    put("lambda-runtime-deadline-ms", deadline_ms.to_string());
    put(
        "lambda-runtime-invoked-function-arn",
        format!("arn:aws:lambda:ap-south-1:000000000000:function:{}", instance.function),
    );
    put("lambda-runtime-trace-id", format!("Root=1-{}", handed.id));
    put("content-type", "application/json".into());
    (headers, handed.payload).into_response()
}

async fn response(
    State((_, instance)): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let streaming =
        headers.get(STREAMING_MODE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("streaming"));
    if streaming {
        streamed(&instance, &id, body).await;
    } else {
        let answer = match axum::body::to_bytes(body, BUFFERED_RESPONSE_MAX_BYTES).await {
            Ok(bytes) => Answer::Buffered(bytes),
            Err(_) => Answer::Failed(Failure::Function("the response is larger than Lambda allows (6 MB)".into())),
        };
        instance.answer(&id, answer);
    }
    instance.ended(&id);
    accepted()
}

/// Forwards a streamed response: the prelude once whole, then every chunk as it comes. A caller that hung
/// up stops nothing: the rest is read and dropped, as the function keeps running in Lambda too.
async fn streamed(instance: &Instance, id: &str, body: Body) {
    let mut chunks = body.into_data_stream();
    let mut head = BytesMut::new();
    let (prelude, rest) = loop {
        match chunks.next().await {
            Some(Ok(chunk)) => {
                head.extend_from_slice(&chunk);
                if let Some(at) = head.windows(PRELUDE_END.len()).position(|w| w == PRELUDE_END) {
                    let rest = head.split_off(at + PRELUDE_END.len());
                    head.truncate(at);
                    break (head.freeze(), rest.freeze());
                }
                if head.len() > PRELUDE_MAX_BYTES {
                    instance.answer(id, Answer::Failed(Failure::Function("no end to the response's prelude".into())));
                    return drain(chunks).await;
                }
            }
            _ => {
                instance.answer(id, Answer::Failed(Failure::Function("the stream ended before its prelude".into())));
                return;
            }
        }
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    instance.answer(id, Answer::Streaming { prelude, body: receiver });
    let mut sender = Some(sender);
    if !rest.is_empty() {
        forward(&mut sender, rest).await;
    }
    while let Some(Ok(chunk)) = chunks.next().await {
        forward(&mut sender, chunk).await;
    }
}

async fn forward(sender: &mut Option<mpsc::Sender<Bytes>>, chunk: Bytes) {
    if let Some(open) = sender.as_ref()
        && open.send(chunk).await.is_err()
    {
        *sender = None;
    }
}

async fn drain(mut chunks: axum::body::BodyDataStream) {
    while let Some(Ok(_)) = chunks.next().await {}
}

async fn error(State((_, instance)): State<Shared>, Path(id): Path<String>, body: Bytes) -> Response {
    let report = String::from_utf8_lossy(&body).chars().take(2_000).collect::<String>();
    tracing::debug!(function = %instance.function, %report, "the function reported an error");
    instance.answer(&id, Answer::Failed(Failure::Function(report)));
    instance.ended(&id);
    accepted()
}

/// The binary could not start: Lambda ends the instance (the invocation waiting for it fails).
async fn init_error(State((_, instance)): State<Shared>, body: Bytes) -> Response {
    let report = String::from_utf8_lossy(&body).chars().take(2_000).collect::<String>();
    tracing::warn!(function = %instance.function, %report, "an instance failed to start");
    instance.kill();
    accepted()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"status": "OK"}))).into_response()
}
