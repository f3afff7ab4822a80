//! A local stand-in for an OpenAI-compatible provider (Cerebras, NeevCloud on vLLM): `POST /chat/completions`
//! and `POST /completions`, streamed (SSE, with the usage chunk only when `stream_options.include_usage`) or
//! not, after a configurable latency. It bills the way a real server does, so that billing bugs show:
//! - the prompt is the whole request as a chat template renders it: messages with their names and tool
//!   calls, tool and function definitions, response formats, documents, a template overhead per request
//!   and per message or tool, at one byte a token (the most any byte-level tokenizer can need);
//! - the output cap is `max_completion_tokens`, else `max_tokens`, else the rest of the context;
//! - a prompt that, with the cap, does not fit the model's context (the catalogue's) is refused at once with
//!   vLLM's 400 and its counts, and billed nothing;
//! - `n` choices are returned and `max(n, best_of)` generated and billed;
//! - answers can be long (up to the cap), carry reasoning text (gpt-oss and Qwen routes), or be tool calls
//!   (when the request offers tools).
//!
//! Tests switch it into failure modes (errors, cut streams, missing usage, unreadable answers, reports above
//! any bound); `make run` and `make bench` use it with no network. It lives only in the dev server and the
//! tests.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

mod generate;
mod reply;

use reply::Reply;

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A normal answer with a usage report.
    Normal,
    /// Every request fails with this status before any byte of an answer.
    Fail(u16),
    /// Streams cut off after two content chunks, with no usage and no `[DONE]`: a connection that dies in
    /// transit, while the server may generate (and bill) the whole answer.
    CutMidStream,
    /// Generates two tokens, then fails: the stream ends with vLLM's error event and closes (no usage, no
    /// `[DONE]`); it bills what it generated.
    ErrorMidStream,
    /// Answers without any usage report.
    NoUsage,
    /// Streams one chunk every 50 ms (time for a client to go away mid-stream).
    SlowStream,
    /// A 200 whose body is not JSON (a proxy's error page), after the call was billed.
    Unreadable,
    /// Reports [`OVER_REPORT_FACTOR`] times the prompt tokens it counts (a provider whose count no bound
    /// foresaw).
    OverReport,
    /// Ends stream events with `\r\n\r\n`, as some servers do.
    CrlfFraming,
    /// Streams a usage chunk claiming nothing was generated first, then two chunks, then cuts the stream.
    DecoyUsageThenCut,
    /// Reports `completion_tokens` as a float (`812.0`).
    FloatUsage,
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    latency: Duration,
    /// The newest [`REQUESTS_KEPT`] bodies (a benchmark's millions of calls must not pile up).
    requests: std::collections::VecDeque<Value>,
    /// Calls it took and would bill (every request but those it failed), all of them.
    served: u64,
    answer: Answer,
    /// The `Retry-After` its 429 and 503 failures carry (none by default, as vLLM sends none).
    retry_after: Option<String>,
}

/// How long the model's answers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The six-word greeting (and the cap, if smaller).
    Greeting,
    /// This many tokens (at most the cap).
    Tokens(u64),
    /// Until the output cap: a model that never stops by itself.
    UntilCap,
}

/// The stand-in's state; clone it to keep a handle for tests.
#[derive(Clone, Debug)]
pub struct Upstream {
    inner: Arc<Mutex<Inner>>,
}

/// How many request bodies the stand-in keeps for tests to read (the newest).
pub const REQUESTS_KEPT: usize = 10_000;

/// The greeting every answer starts with, a token a word.
const WORDS: [&str; 6] = ["Namaste! ", "This ", "is ", "the ", "stand-in ", "model."];
/// Every token after the greeting.
const FILLER: &str = "more ";
/// The context of a model the catalogue does not list.
pub const DEFAULT_CONTEXT_LENGTH: u64 = 131_072;
/// How many times the prompt tokens it counts [`Mode::OverReport`] reports.
pub const OVER_REPORT_FACTOR: u64 = 1_000;
/// What the template adds: per request (system block, date header) and per message or tool.
pub const TEMPLATE_TOKENS_PER_REQUEST: u64 = 40;
pub const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 6;
/// The request fields a chat template renders into the prompt (besides messages).
const RENDERED_FIELDS: [&str; 8] =
    ["messages", "prompt", "tools", "functions", "tool_choice", "response_format", "documents", "chat_template_kwargs"];

impl Upstream {
    pub fn new(latency: Duration) -> Self {
        let inner = Inner {
            mode: Mode::Normal,
            latency,
            requests: Default::default(),
            served: 0,
            answer: Answer::Greeting,
            retry_after: None,
        };
        Self { inner: Arc::new(Mutex::new(inner)) }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// How long each answer waits before it starts (a benchmark's throughput steps use none).
    pub fn set_latency(&self, latency: Duration) {
        self.inner().latency = latency;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner().mode = mode;
    }

    /// The `Retry-After` value its 429 and 503 failures send (`None`: the header is left out).
    pub fn set_retry_after(&self, retry_after: Option<&str>) {
        self.inner().retry_after = retry_after.map(str::to_owned);
    }

    pub fn set_answer(&self, answer: Answer) {
        self.inner().answer = answer;
    }

    /// How many calls it took and would bill (a provider bills a call it accepted, answered or not).
    pub fn served(&self) -> u64 {
        self.inner().served
    }

    /// The bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.inner().requests.iter().cloned().collect()
    }

    /// Prompt tokens the stand-in counts for a body: the rendered fields at one byte a token, plus the
    /// template's own tokens.
    pub fn prompt_tokens(body: &Value) -> u64 {
        let rendered: u64 =
            RENDERED_FIELDS.iter().filter_map(|f| body.get(*f)).map(|v| v.to_string().len() as u64).sum();
        let parts: u64 = ["messages", "tools", "functions"]
            .iter()
            .filter_map(|f| body.get(*f).and_then(Value::as_array))
            .map(|items| items.len() as u64)
            .sum();
        rendered + TEMPLATE_TOKENS_PER_REQUEST + parts * TEMPLATE_TOKENS_PER_MESSAGE
    }

    /// The output cap as a vLLM server reads it: `max_completion_tokens`, else `max_tokens`, else the rest
    /// of the context.
    pub fn output_cap(body: &Value) -> u64 {
        let cap = |f: &str| body.get(f).and_then(Value::as_u64);
        cap("max_completion_tokens")
            .or_else(|| cap("max_tokens"))
            .unwrap_or_else(|| Self::context_length(body).saturating_sub(Self::prompt_tokens(body)))
    }

    /// The context of the model a request names, as the catalogue gives it for the route's model name (a
    /// provider knows its own models).
    pub fn context_length(body: &Value) -> u64 {
        static CONTEXTS: LazyLock<HashMap<String, u64>> = LazyLock::new(|| {
            let catalog = shared::catalog::Catalog::builtin().map(|c| c.models).unwrap_or_default();
            let routes = catalog.iter().flat_map(|m| m.routes.iter().map(|r| (r.model.clone(), m.context_length)));
            routes.map(|(name, context)| (name, u64::from(context))).collect()
        });
        body.get("model")
            .and_then(Value::as_str)
            .and_then(|m| CONTEXTS.get(m))
            .copied()
            .unwrap_or(DEFAULT_CONTEXT_LENGTH)
    }

    /// vLLM's refusal of a request whose prompt, with the output cap it sets, does not fit the context: it
    /// is answered at once with a 400 and billed nothing.
    pub fn context_refusal(body: &Value) -> Option<String> {
        let (context, prompt) = (Self::context_length(body), Self::prompt_tokens(body));
        if prompt >= context {
            return Some(format!(
                "This model's maximum context length is {context} tokens. However, your request has {prompt} input \
                 tokens. Please reduce the length of the input messages."
            ));
        }
        let cap = ["max_completion_tokens", "max_tokens"].iter().find_map(|f| body.get(*f).and_then(Value::as_u64))?;
        (prompt + cap > context).then(|| {
            format!(
                "'max_tokens' or 'max_completion_tokens' is too large: {cap}. This model's maximum context length is \
                 {context} tokens and your request has {prompt} input tokens ({cap} > {context} - {prompt}). None"
            )
        })
    }

    /// How many completions a request generates (and is billed for): `max(n, best_of)`.
    pub fn generated_choices(body: &Value) -> u64 {
        let count = |f: &str| body.get(f).and_then(Value::as_u64).unwrap_or(1).max(1);
        count("n").max(count("best_of"))
    }

    /// Tokens each choice generates for a body.
    pub fn tokens_per_choice(&self, body: &Value) -> u64 {
        let cap = Self::output_cap(body);
        let inner = self.inner();
        let answered = match inner.answer {
            Answer::Greeting => cap.min(WORDS.len() as u64),
            Answer::Tokens(n) => cap.min(n),
            Answer::UntilCap => cap,
        };
        // A server that fails mid-answer generated only what it sent.
        if inner.mode == Mode::ErrorMidStream { answered.min(2) } else { answered }
    }

    /// Completion tokens billed for a body: every generated choice.
    pub fn completion_tokens(&self, body: &Value) -> u64 {
        self.tokens_per_choice(body) * Self::generated_choices(body)
    }
}

pub fn router(upstream: Upstream) -> Router {
    Router::new()
        .route("/chat/completions", post(chat))
        .route("/completions", post(completion))
        .route("/dev/failure", post(dev_failure))
        .with_state(upstream)
}

/// A failure as a provider answers it, with its own words (which must never reach our caller) and, for a
/// 429 or 503, the `Retry-After` it was given.
fn failure(status: u16, retry_after: Option<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"message": "stand-in failure: account quota exceeded for org-standin", "type": "server_error"}});
    let mut response = (status, Json(body)).into_response();
    let busy = matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE);
    if let Some(value) = retry_after.filter(|_| busy).and_then(|v| axum::http::HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

/// `POST /dev/failure {"status": 429, "retry_after": "2"}` makes every answer that failure until
/// `{"status": null}`: for the client checks, which reach a local server only over HTTP.
async fn dev_failure(State(upstream): State<Upstream>, Json(body): Json<Value>) -> StatusCode {
    let status = body.get("status").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok());
    upstream.set_mode(status.map_or(Mode::Normal, Mode::Fail));
    upstream.set_retry_after(body.get("retry_after").and_then(Value::as_str));
    StatusCode::NO_CONTENT
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
    let (mode, latency, retry_after) = {
        let mut inner = upstream.inner();
        if inner.requests.len() >= REQUESTS_KEPT {
            inner.requests.pop_front();
        }
        inner.requests.push_back(body.clone());
        if let Some(message) = Upstream::context_refusal(&body) {
            let error =
                json!({ "error": { "message": message, "type": "BadRequestError", "param": null, "code": 400 } });
            return (StatusCode::BAD_REQUEST, Json(error)).into_response();
        }
        if !matches!(inner.mode, Mode::Fail(_)) {
            inner.served += 1;
        }
        (inner.mode, inner.latency, inner.retry_after.clone())
    };
    // No timer at all for a stand-in that answers at once (a zero sleep still waits for the timer's tick).
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Mode::Fail(status) = mode {
        return failure(status, retry_after);
    }
    if mode == Mode::Unreadable {
        return (StatusCode::OK, "<html><body>502 Bad Gateway</body></html>").into_response();
    }
    let reply = Reply::new(&upstream, &body, chat, mode);
    if body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
        reply.streamed(include_usage)
    } else {
        Json(reply.complete()).into_response()
    }
}
