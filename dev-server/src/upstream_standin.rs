//! A local stand-in for an OpenAI-compatible provider (Cerebras, NeevCloud): `POST /chat/completions` and
//! `POST /completions`, streamed (SSE, with the usage chunk when `stream_options.include_usage`) or not,
//! after a configurable latency. Tests switch it into failure modes; `make run` and `make bench` use it
//! with no network. It lives only in the dev server and the tests.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A normal answer with a usage report.
    Normal,
    /// Every request fails with this status before any byte of an answer.
    Fail(u16),
    /// Streams cut off after two content chunks, with no usage and no `[DONE]`.
    CutMidStream,
    /// Answers without any usage report.
    NoUsage,
    /// Streams one chunk every 50 ms (time for a client to go away mid-stream).
    SlowStream,
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    latency: Duration,
    requests: Vec<Value>,
}

/// The stand-in's state; clone it to keep a handle for tests.
#[derive(Clone, Debug)]
pub struct Upstream {
    inner: Arc<Mutex<Inner>>,
}

/// The words every answer is made of (four characters a token, as providers roughly count).
const WORDS: [&str; 6] = ["Namaste! ", "This ", "is ", "the ", "stand-in ", "model."];

impl Upstream {
    pub fn new(latency: Duration) -> Self {
        Self { inner: Arc::new(Mutex::new(Inner { mode: Mode::Normal, latency, requests: Vec::new() })) }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner().mode = mode;
    }

    /// The bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.inner().requests.clone()
    }

    /// Prompt tokens the stand-in reports for a body: a quarter of the prompt's bytes, at least one.
    pub fn prompt_tokens(body: &Value) -> u64 {
        let text = body.get("messages").or_else(|| body.get("prompt")).map(|v| v.to_string()).unwrap_or_default();
        (text.len() as u64 / 4).max(1)
    }

    /// Completion tokens: one per word, no more than `max_tokens`.
    pub fn completion_tokens(body: &Value) -> u64 {
        let cap = body.get("max_completion_tokens").or_else(|| body.get("max_tokens")).and_then(Value::as_u64);
        cap.unwrap_or(u64::MAX).min(WORDS.len() as u64)
    }
}

pub fn router(upstream: Upstream) -> Router {
    Router::new().route("/chat/completions", post(chat)).route("/completions", post(completion)).with_state(upstream)
}

async fn chat(State(upstream): State<Upstream>, Json(body): Json<Value>) -> Response {
    answer(upstream, body, true).await
}

async fn completion(State(upstream): State<Upstream>, Json(body): Json<Value>) -> Response {
    answer(upstream, body, false).await
}

fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

async fn answer(upstream: Upstream, body: Value, chat: bool) -> Response {
    let (mode, latency) = {
        let mut inner = upstream.inner();
        inner.requests.push(body.clone());
        (inner.mode, inner.latency)
    };
    tokio::time::sleep(latency).await;
    if let Mode::Fail(status) = mode {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, Json(json!({"error": {"message": "stand-in failure", "type": "server_error"}})))
            .into_response();
    }
    let model = body.get("model").cloned().unwrap_or(Value::Null);
    let prompt_tokens = Upstream::prompt_tokens(&body);
    let completion_tokens = Upstream::completion_tokens(&body);
    let usage = json!({ "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens });
    let words: Vec<&str> = WORDS.iter().take(completion_tokens as usize).copied().collect();
    let (object, chunk_object) =
        if chat { ("chat.completion", "chat.completion.chunk") } else { ("text_completion", "text_completion") };

    if !body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let choice = if chat {
            json!({ "index": 0, "message": { "role": "assistant", "content": words.concat() }, "finish_reason": "stop" })
        } else {
            json!({ "index": 0, "text": words.concat(), "finish_reason": "stop" })
        };
        let mut answer = json!({ "id": "cmpl-standin", "object": object, "created": 1_795_600_000, "model": model, "choices": [choice] });
        if mode != Mode::NoUsage {
            answer["usage"] = usage;
        }
        return Json(answer).into_response();
    }

    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let mut events: Vec<Bytes> = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if mode == Mode::CutMidStream && i == 2 {
            break;
        }
        let choice = if chat {
            json!({ "index": 0, "delta": { "content": word } })
        } else {
            json!({ "index": 0, "text": word })
        };
        events.push(sse(&json!({ "id": "cmpl-standin", "object": chunk_object, "created": 1_795_600_000, "model": model, "choices": [choice] })));
    }
    if mode != Mode::CutMidStream {
        let finish = if chat {
            json!({ "index": 0, "delta": {}, "finish_reason": "stop" })
        } else {
            json!({ "index": 0, "text": "", "finish_reason": "stop" })
        };
        events.push(sse(&json!({ "id": "cmpl-standin", "object": chunk_object, "created": 1_795_600_000, "model": model, "choices": [finish] })));
        if include_usage && mode != Mode::NoUsage {
            events.push(sse(&json!({ "id": "cmpl-standin", "object": chunk_object, "created": 1_795_600_000, "model": model, "choices": [], "usage": usage })));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    }
    let cut = mode == Mode::CutMidStream;
    let pause = Duration::from_millis(if mode == Mode::SlowStream { 50 } else { 1 });
    let stream = futures_util::stream::unfold((events.into_iter(), cut), move |(mut events, cut)| async move {
        match events.next() {
            Some(event) => {
                tokio::time::sleep(pause).await;
                Some((Ok::<_, std::io::Error>(event), (events, cut)))
            }
            // A cut stream ends with a transport error, as a dying upstream connection does.
            None if cut => Some((Err(std::io::Error::other("connection reset")), (events, false))),
            None => None,
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response
}
