//! The inference gateway: authenticate the API key (cached), hold the request's maximum cost, forward to
//! the model's provider routes with fallback, read the usage the provider reports, settle, and log usage.
//! Prompts and completions pass through memory only: nothing here stores or logs their text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::billing::{self, BalanceHints, Hold, UsageRecord};
use crate::catalog::{Catalog, Model, Route};
use crate::config::var;
use crate::error::{ApiError, ApiResult};
use crate::keys::{KeyOwner, KeyStore};
use crate::secrets::{SecretString, sha256_hex};
use crate::state::AppState;

/// A revoked or expired key keeps working for at most this long (the cache's lifetime).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(60);
/// After the client disconnects, how much more of the upstream stream is read to learn the usage.
const DRAIN_LIMIT_BYTES: usize = 1 << 20;
const DRAIN_LIMIT_TIME: Duration = Duration::from_secs(30);
/// Largest request body accepted by the inference endpoints.
pub const MAX_INFERENCE_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One OpenAI-compatible upstream.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub base_url: String,
    pub api_key: Option<SecretString>,
}

/// Upstreams by name: `cerebras` (`CEREBRAS_API_KEY`, `CEREBRAS_BASE_URL`, default
/// `https://api.cerebras.ai/v1`) and `neevcloud` (`NEEVCLOUD_API_KEY`, `NEEVCLOUD_BASE_URL`; its routes are
/// skipped while no base URL is configured).
#[derive(Debug, Clone, Default)]
pub struct Providers {
    by_name: HashMap<String, Provider>,
}

impl Providers {
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        let mut providers = Self::default();
        let cerebras_url = var::<String>("CEREBRAS_BASE_URL")?.unwrap_or_else(|| "https://api.cerebras.ai/v1".into());
        providers.insert(Provider {
            name: "cerebras".into(),
            base_url: cerebras_url,
            api_key: var::<String>("CEREBRAS_API_KEY")?.map(SecretString::new),
        });
        if let Some(url) = var::<String>("NEEVCLOUD_BASE_URL")? {
            providers.insert(Provider {
                name: "neevcloud".into(),
                base_url: url,
                api_key: var::<String>("NEEVCLOUD_API_KEY")?.map(SecretString::new),
            });
        }
        Ok(providers)
    }

    pub fn insert(&mut self, provider: Provider) {
        self.by_name.insert(provider.name.clone(), provider);
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.by_name.get(name)
    }
}

/// Everything the inference function keeps for the life of the process.
pub struct Gateway {
    pub catalog: Catalog,
    pub providers: Providers,
    http: reqwest::Client,
    keys: Mutex<HashMap<String, (Option<KeyOwner>, Instant)>>,
    key_ttl: Duration,
    /// When each key's `last_used_at` was last written, to write it at most once a minute.
    uses: Mutex<HashMap<String, Instant>>,
    /// Latest wallet balances seen, so that concurrent requests on one wallet settle at the first try.
    balances: Arc<BalanceHints>,
}

impl Gateway {
    pub fn new(catalog: Catalog, providers: Providers) -> ApiResult<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ApiError::Internal(format!("HTTP client: {e}")))?;
        Ok(Self {
            catalog,
            providers,
            http,
            keys: Mutex::new(HashMap::new()),
            key_ttl: KEY_CACHE_TTL,
            uses: Mutex::new(HashMap::new()),
            balances: Arc::default(),
        })
    }

    /// Shortens the key cache's lifetime (tests of revocation).
    pub fn with_key_cache_ttl(mut self, ttl: Duration) -> Self {
        self.key_ttl = ttl;
        self
    }

    /// Resolves a presented API key, from the cache when it was looked up in the last minute.
    pub async fn authenticate(&self, state: &AppState, presented: Option<&str>) -> ApiResult<KeyOwner> {
        let invalid = || {
            ApiError::Unauthenticated {
            code: "invalid_api_key",
            message: "Incorrect API key provided. Create a key in the dashboard and send it as `Authorization: Bearer sk-inferex-...`.".into(),
        }
        };
        let key = presented.filter(|k| k.starts_with(crate::keys::KEY_PREFIX) && k.len() < 200).ok_or_else(invalid)?;
        let hash = sha256_hex(key);
        let cached = self.keys.lock().ok().and_then(|cache| {
            cache.get(&hash).filter(|(_, at)| at.elapsed() < self.key_ttl).map(|(owner, _)| owner.clone())
        });
        let owner = match cached {
            Some(owner) => owner,
            None => {
                let owner = state.store.key_owner(&hash).await?;
                if let Ok(mut cache) = self.keys.lock() {
                    if cache.len() > 100_000 {
                        cache.clear();
                    }
                    cache.insert(hash, (owner.clone(), Instant::now()));
                }
                owner
            }
        };
        owner.ok_or_else(invalid)
    }

    /// Updates the key's `last_used_at` in the background, at most once a minute per key.
    pub fn note_use(&self, state: &AppState, owner: &KeyOwner) {
        let due = self.uses.lock().is_ok_and(|mut uses| {
            let due = uses.get(&owner.key_id).is_none_or(|at| at.elapsed() >= Duration::from_secs(60));
            if due {
                uses.insert(owner.key_id.clone(), Instant::now());
            }
            due
        });
        if due {
            let (store, owner, at) = (state.store.clone(), owner.clone(), state.clock.now());
            tokio::spawn(async move {
                if let Err(e) = crate::keys::record_use(store.as_ref(), &owner, at).await {
                    tracing::warn!(error = %e, key_id = %owner.key_id, "recording key use failed");
                }
            });
        }
    }

    pub fn model(&self, id: &str) -> ApiResult<&Model> {
        self.catalog.model(id).ok_or_else(|| ApiError::NotFound {
            code: "model_not_found",
            message: format!("The model `{id}` does not exist. GET /v1/models lists the available models."),
        })
    }
}

/// Which OpenAI endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
        }
    }
}

/// An upper bound of the prompt's tokens without a tokenizer: every token covers at least one byte of text,
/// plus a few per message for the chat template.
pub fn prompt_token_bound(endpoint: Endpoint, body: &Value) -> u64 {
    let text_bytes = |v: &Value| -> u64 {
        match v {
            Value::String(s) => s.len() as u64,
            other => other.to_string().len() as u64,
        }
    };
    match endpoint {
        Endpoint::ChatCompletions => body
            .get("messages")
            .and_then(Value::as_array)
            .map(|messages| messages.iter().map(|m| text_bytes(m.get("content").unwrap_or(&Value::Null)) + 8).sum())
            .unwrap_or(0),
        Endpoint::Completions => body.get("prompt").map(text_bytes).unwrap_or(0),
    }
}

fn requested_max_tokens(body: &Value, model: &Model) -> ApiResult<u64> {
    let requested = body.get("max_completion_tokens").or_else(|| body.get("max_tokens"));
    match requested {
        None | Some(Value::Null) => Ok(u64::from(model.max_output_tokens)),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= u64::from(model.max_output_tokens) => Ok(n),
            _ => Err(ApiError::invalid(
                "invalid_max_tokens",
                "max_tokens",
                format!("max_tokens must be an integer from 1 to {} for {}", model.max_output_tokens, model.id),
            )),
        },
    }
}

/// A validated request, ready to be held and forwarded.
pub struct Prepared {
    pub request_id: String,
    pub endpoint: Endpoint,
    pub model: Model,
    pub body: Value,
    pub stream: bool,
    /// Whether the client itself asked for the usage chunk of a stream.
    pub client_wants_usage: bool,
    pub prompt_bound: u64,
    pub max_tokens: u64,
}

pub fn prepare(gateway: &Gateway, endpoint: Endpoint, body: Value, request_id: String) -> ApiResult<Prepared> {
    let Value::Object(_) = &body else {
        return Err(ApiError::InvalidRequest {
            code: "invalid_json",
            message: "request body must be a JSON object".into(),
            param: None,
        });
    };
    let model_id = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("missing_field", "model", "model is required"))?;
    let model = gateway.model(model_id)?.clone();
    match endpoint {
        Endpoint::ChatCompletions if !body.get("messages").is_some_and(Value::is_array) => {
            return Err(ApiError::invalid("missing_field", "messages", "messages must be an array"));
        }
        Endpoint::Completions if body.get("prompt").is_none() => {
            return Err(ApiError::invalid("missing_field", "prompt", "prompt is required"));
        }
        _ => {}
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let client_wants_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    Ok(Prepared {
        request_id,
        endpoint,
        prompt_bound: prompt_token_bound(endpoint, &body),
        max_tokens: requested_max_tokens(&body, &model)?,
        model,
        body,
        stream,
        client_wants_usage,
    })
}

impl Prepared {
    /// The most this request can cost: the prompt's upper bound plus every token it may generate.
    pub fn max_cost(&self) -> i64 {
        self.model.cost(self.prompt_bound, self.max_tokens)
    }

    fn upstream_body(&self, route: &Route) -> Value {
        let mut body = self.body.clone();
        body["model"] = json!(route.model);
        if self.stream {
            body["stream_options"] = json!({ "include_usage": true });
        }
        body
    }
}

/// Token counts reported by (or estimated for) a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub estimated: bool,
}

fn reported_usage(value: &Value) -> Option<Usage> {
    let usage = value.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        prompt_tokens: usage.get("prompt_tokens").and_then(Value::as_u64)?,
        completion_tokens: usage.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
        estimated: false,
    })
}

/// Roughly four characters a token for generated text that arrived without a usage report.
fn estimate_completion_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

fn generated_chars(value: &Value) -> usize {
    value
        .get("choices")
        .and_then(Value::as_array)
        .map(|choices| {
            choices
                .iter()
                .map(|c| {
                    ["/delta/content", "/message/content", "/text", "/delta/reasoning", "/message/reasoning"]
                        .iter()
                        .filter_map(|p| c.pointer(p).and_then(Value::as_str))
                        .map(str::len)
                        .sum::<usize>()
                })
                .sum()
        })
        .unwrap_or(0)
}

/// What an upstream attempt produced before any byte reached the client.
enum Attempt {
    /// A non-streaming answer (status, JSON body).
    Complete { provider: String, status: u16, body: Value },
    /// A streaming answer, not yet read.
    Streaming { provider: String, response: reqwest::Response },
}

fn upstream_error_to_api(status: u16, body: &Value) -> ApiError {
    let message = body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("the model provider rejected the request")
        .chars()
        .take(1000)
        .collect::<String>();
    let param = body.pointer("/error/param").and_then(Value::as_str).map(str::to_owned);
    match status {
        401 | 403 => ApiError::BadGateway {
            code: "upstream_auth_error",
            message: "the model provider refused our credentials".into(),
        },
        404 => ApiError::BadGateway { code: "upstream_model_unavailable", message },
        413 => ApiError::PayloadTooLarge { limit_bytes: MAX_INFERENCE_BODY_BYTES },
        _ => ApiError::InvalidRequest { code: "upstream_invalid_request", message, param },
    }
}

/// A timeout is a 504; any other transport failure a 502 with the given code and message.
fn transport_failure(e: &reqwest::Error, code: &'static str, message: &str) -> ApiError {
    if e.is_timeout() {
        ApiError::GatewayTimeout { message: "the model provider did not answer in time".into() }
    } else {
        ApiError::BadGateway { code, message: message.into() }
    }
}

/// Tries each configured route in order. Falls back on connect errors, timeouts, 5xx and 429 (nothing has
/// reached the client yet); any other 4xx is the request's fault and is answered at once.
async fn forward(gateway: &Gateway, prepared: &Prepared) -> ApiResult<Attempt> {
    let mut last = ApiError::BadGateway {
        code: "no_route",
        message: format!("no provider is configured for {}", prepared.model.id),
    };
    for route in &prepared.model.routes {
        let Some(provider) = gateway.providers.get(&route.provider) else { continue };
        let url = format!("{}{}", provider.base_url.trim_end_matches('/'), prepared.endpoint.path());
        let mut request = gateway.http.post(&url).json(&prepared.upstream_body(route));
        request = request.timeout(if prepared.stream { Duration::from_secs(300) } else { Duration::from_secs(120) });
        if let Some(key) = &provider.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(provider = %provider.name, timeout = e.is_timeout(), "upstream unreachable; trying the next route");
                last = transport_failure(&e, "upstream_unavailable", "the model provider is unreachable");
                continue;
            }
        };
        let status = response.status().as_u16();
        if status == 429 || status >= 500 {
            tracing::warn!(provider = %provider.name, status, "upstream failed; trying the next route");
            last = ApiError::BadGateway {
                code: "upstream_error",
                message: format!("the model provider answered {status}"),
            };
            continue;
        }
        if status >= 400 {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            return Err(upstream_error_to_api(status, &body));
        }
        if prepared.stream {
            return Ok(Attempt::Streaming { provider: provider.name.clone(), response });
        }
        match response.json::<Value>().await {
            Ok(body) => return Ok(Attempt::Complete { provider: provider.name.clone(), status, body }),
            Err(e) => last = transport_failure(&e, "upstream_error", "the model provider sent an unreadable answer"),
        }
    }
    Err(last)
}

/// The end of the usage retention window (12 months) and of the ledger's (payments window).
fn expiries(state: &AppState) -> (i64, i64) {
    let now = state.clock.now();
    let usage = state.config.retention.until(crate::retention::Span::Usage, now);
    (usage, crate::wallet::payment_expiry(&state.config, now))
}

struct CallFacts<'a> {
    owner: &'a KeyOwner,
    prepared: &'a Prepared,
    hold: &'a Hold,
    balances: &'a BalanceHints,
    provider: String,
    started: Instant,
    ttft: Option<Duration>,
}

async fn settle_call(state: &AppState, facts: CallFacts<'_>, usage: Usage, status: &str) -> ApiResult<UsageRecord> {
    let model = &facts.prepared.model;
    let record = UsageRecord {
        id: facts.prepared.request_id.clone(),
        key_id: facts.owner.key_id.clone(),
        model: model.id.clone(),
        provider: facts.provider,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.prompt_tokens + usage.completion_tokens,
        cost: 0,
        latency_ms: u64::try_from(facts.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ttft_ms: facts.ttft.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        status: status.into(),
        estimated: usage.estimated,
        created_at: state.clock.now(),
    };
    let cost = model.cost(usage.prompt_tokens, usage.completion_tokens);
    let (usage_expiry, ledger_expiry) = expiries(state);
    billing::settle(state.store.as_ref(), facts.balances, facts.hold, cost, record, usage_expiry, ledger_expiry).await
}

/// A finished non-streaming call: the upstream's JSON with our model id, ready to send.
pub struct Completed {
    pub status: u16,
    pub body: Value,
}

/// The answer to a streaming call: Server-Sent Events to relay to the client.
pub type EventStream = mpsc::Receiver<Result<Bytes, std::io::Error>>;

pub enum Answer {
    Complete(Completed),
    Stream(EventStream),
}

/// Runs one call end to end. The hold is released on every failure path; a stream's settlement happens in
/// a task that outlives the client connection.
pub async fn call(state: &AppState, gateway: &Gateway, owner: KeyOwner, prepared: Prepared) -> ApiResult<Answer> {
    let started = Instant::now();
    let (store, balances) = (state.store.as_ref(), gateway.balances.as_ref());
    let hold = billing::place_hold(store, state.clock.as_ref(), balances, &owner.user_id, prepared.max_cost()).await?;
    let attempt = match forward(gateway, &prepared).await {
        Ok(attempt) => attempt,
        Err(e) => {
            billing::release(state.store.as_ref(), &hold.user_id, &hold.id, hold.amount).await?;
            return Err(e);
        }
    };
    match attempt {
        Attempt::Complete { provider, status, mut body } => {
            let usage = reported_usage(&body).unwrap_or(Usage {
                prompt_tokens: prepared.prompt_bound,
                completion_tokens: estimate_completion_tokens(generated_chars(&body)),
                estimated: true,
            });
            let facts =
                CallFacts { owner: &owner, prepared: &prepared, hold: &hold, balances, provider, started, ttft: None };
            settle_call(state, facts, usage, "ok").await?;
            body["model"] = json!(prepared.model.id);
            Ok(Answer::Complete(Completed { status, body }))
        }
        Attempt::Streaming { provider, response } => {
            let (tx, rx) = mpsc::channel(64);
            let (state, balances) = (state.clone(), gateway.balances.clone());
            tokio::spawn(async move {
                relay_stream(state, balances, owner, prepared, hold, provider, response, tx, started).await;
            });
            Ok(Answer::Stream(rx))
        }
    }
}

/// Relays an upstream SSE stream to the client, learning the usage on the way; settles at the end, even
/// when the client went away (then reading on, within bounds, only to learn the usage).
#[allow(clippy::too_many_arguments)]
async fn relay_stream(
    state: AppState,
    balances: Arc<BalanceHints>,
    owner: KeyOwner,
    prepared: Prepared,
    hold: Hold,
    provider: String,
    response: reqwest::Response,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    started: Instant,
) {
    let mut upstream = response.bytes_stream();
    let mut buffer = Vec::new();
    let mut usage: Option<Usage> = None;
    let mut chars = 0usize;
    let mut ttft = None;
    let mut client_gone = false;
    let mut drained = 0usize;
    let mut drain_started: Option<Instant> = None;
    let mut finished = false;
    let mut failed = false;
    while let Some(next) = upstream.next().await {
        let chunk = match next {
            Ok(chunk) => chunk,
            Err(_) => {
                failed = true;
                break;
            }
        };
        if client_gone {
            drained += chunk.len();
            if drained > DRAIN_LIMIT_BYTES || drain_started.is_some_and(|at| at.elapsed() > DRAIN_LIMIT_TIME) {
                break;
            }
        }
        buffer.extend_from_slice(&chunk);
        // Relay whole events only, so that a usage chunk can be dropped.
        while let Some(end) = find_event_end(&buffer) {
            let event: Vec<u8> = buffer.drain(..end).collect();
            // Each event is parsed once: for its usage, its generated text and the public model id.
            let mut relay = Relay::AsReceived;
            if let Some(data) = event_data(&event) {
                if data == "[DONE]" {
                    finished = true;
                } else if let Ok(mut value) = serde_json::from_str::<Value>(data) {
                    chars += generated_chars(&value);
                    let mut forward_event = true;
                    if let Some(reported) = reported_usage(&value) {
                        usage = Some(reported);
                        let only_usage = value.get("choices").and_then(Value::as_array).is_none_or(Vec::is_empty);
                        forward_event = prepared.client_wants_usage || !only_usage;
                    }
                    if !forward_event {
                        relay = Relay::Drop;
                    } else if value.get("model").is_some() {
                        value["model"] = json!(prepared.model.id);
                        relay = Relay::Rewritten(format!("data: {value}\n\n").into_bytes());
                    }
                }
            }
            if ttft.is_none() {
                ttft = Some(started.elapsed());
            }
            let bytes = match relay {
                Relay::AsReceived => event,
                Relay::Rewritten(bytes) => bytes,
                Relay::Drop => continue,
            };
            if !client_gone && tx.send(Ok(Bytes::from(bytes))).await.is_err() {
                client_gone = true;
                drain_started = Some(Instant::now());
            }
        }
    }
    if (failed || !finished) && !client_gone {
        let error = json!({ "error": { "type": "api_error", "code": "upstream_error", "message": "the model provider ended the stream early", "param": null } });
        let _ = tx.send(Ok(Bytes::from(format!("data: {error}\n\n")))).await;
    }
    drop(tx);
    let status = if client_gone {
        "client_disconnected"
    } else if finished {
        "ok"
    } else {
        "upstream_error"
    };
    let usage = usage.unwrap_or(Usage {
        prompt_tokens: prepared.prompt_bound,
        completion_tokens: estimate_completion_tokens(chars),
        estimated: true,
    });
    let facts =
        CallFacts { owner: &owner, prepared: &prepared, hold: &hold, balances: &balances, provider, started, ttft };
    if let Err(e) = settle_call(&state, facts, usage, status).await {
        // The sweeper gives the hold back if settlement failed for good.
        tracing::error!(error = %e, request_id = %prepared.request_id, "stream settlement failed");
    }
}

/// What happens to one upstream event on its way to the client.
enum Relay {
    AsReceived,
    /// With the public model id in place of the provider's.
    Rewritten(Vec<u8>),
    /// A usage-only chunk the client did not ask for.
    Drop,
}

/// SSE events end with a blank line.
fn find_event_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

fn event_data(event: &[u8]) -> Option<&str> {
    std::str::from_utf8(event).ok()?.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim)
}
