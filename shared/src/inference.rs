//! The inference gateway: authenticate the API key (cached), hold the request's maximum cost, forward to
//! the model's provider routes with fallback, read the usage the provider reports, settle, and log usage.
//! Prompts and completions pass through memory only: nothing here stores or logs their text.

use crate::error::ErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::catalog::{Catalog, Model, OUTPUT_CAP_PARAMS, Route};
use crate::env::var;
use crate::error::{ApiError, ApiResult};
use crate::keys::{KeyOwner, KeyStore};
use crate::runtime_secrets::{self, PROVIDER_KEY, Rotating, SecretSource};
use crate::secrets::{SecretString, sha256_hex};
use crate::usage::UsageRecord;
use crate::wallet::metering::Leases;
use crate::wallet::metering::{self, BalanceHints, Hold};

/// The most keys whose last use a gateway remembers (it writes `last_used_at` at most once a minute each).
const KEYS_TRACKED: usize = 100_000;
/// A revoked or expired key keeps working for at most this long (the cache's lifetime).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(60);
/// The inference function's `Timeout` in template.yaml (a test keeps the two equal). Everything a call does
/// fits inside it, so no settlement is ever cut off by the platform.
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(300);
/// How long settlement may keep retrying on a busy wallet.
pub const SETTLE_BUDGET: Duration = Duration::from_secs(30);
/// From the request's arrival, how long the upstream may take to answer, stream and (after a client left)
/// be drained for its usage: the function's timeout less settlement and a margin of the same size.
pub const UPSTREAM_DEADLINE: Duration = FUNCTION_TIMEOUT.saturating_sub(SETTLE_BUDGET).saturating_sub(SETTLE_BUDGET);
/// A non-streaming answer that takes longer than this is given up (within the deadline above).
const NON_STREAMING_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest single SSE event read from a provider (a stream without event ends stops there).
const MAX_EVENT_BYTES: usize = 4 << 20;
/// After the client disconnects, how much longer the upstream is read to learn the usage.
const DRAIN_LIMIT_TIME: Duration = Duration::from_secs(30);
/// Largest request body accepted by the inference endpoints.
pub const MAX_INFERENCE_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What a call needs beyond the gateway: the store, the clock and the configuration (the HTTP layer builds
/// it from its `AppState`). Cheap to clone: a call's detached tasks each keep one.
#[derive(Clone)]
pub struct CallContext {
    pub store: Arc<dyn crate::store::ItemStore>,
    pub clock: Arc<dyn crate::clock::Clock>,
    pub config: Arc<crate::config::Config>,
}

/// One OpenAI-compatible upstream.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub base_url: String,
    pub api_key: Option<Arc<Rotating<SecretString>>>,
}

/// A provider key from the local environment, checked like every secret.
fn provider_key_from_env(name: &str) -> Result<Option<Arc<Rotating<SecretString>>>, crate::env::ConfigError> {
    let Some(raw) = var::<String>(name)? else { return Ok(None) };
    let key = runtime_secrets::checked(name, &raw, PROVIDER_KEY)
        .map_err(|e| crate::env::ConfigError { name: name.to_owned(), reason: e.to_string() })?;
    Ok(Some(Arc::new(Rotating::fixed(key, Arc::new(crate::clock::SystemClock)))))
}

/// Upstreams by name: `cerebras` (`CEREBRAS_API_KEY`, `CEREBRAS_BASE_URL`, default
/// `https://api.cerebras.ai/v1`) and `neevcloud` (`NEEVCLOUD_API_KEY`, `NEEVCLOUD_BASE_URL`; its routes are
/// skipped while no base URL is configured).
#[derive(Debug, Clone, Default)]
pub struct Providers {
    by_name: HashMap<String, Provider>,
}

impl Providers {
    pub fn from_env() -> Result<Self, crate::env::ConfigError> {
        let mut providers = Self::default();
        let cerebras_url = var::<String>("CEREBRAS_BASE_URL")?.unwrap_or_else(|| "https://api.cerebras.ai/v1".into());
        providers.insert(Provider {
            name: "cerebras".into(),
            base_url: cerebras_url,
            api_key: provider_key_from_env("CEREBRAS_API_KEY")?,
        });
        if let Some(url) = var::<String>("NEEVCLOUD_BASE_URL")? {
            providers.insert(Provider {
                name: "neevcloud".into(),
                base_url: url,
                api_key: provider_key_from_env("NEEVCLOUD_API_KEY")?,
            });
        }
        Ok(providers)
    }

    /// In AWS: base URLs from the environment as above, keys from the Secrets Manager secret
    /// `{"cerebras": "…", "neevcloud": "…"}` (the second only while `NEEVCLOUD_BASE_URL` is set); each key is
    /// checked at start and refreshed like every secret.
    pub async fn from_secret(
        source: Arc<dyn SecretSource>,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Result<Self, crate::error::BoxError> {
        let mut providers = Self::from_env()?;
        let names: Vec<String> = providers.by_name.keys().cloned().collect();
        for name in names {
            let field = name.clone();
            let parse = move |raw: &str| {
                let keys: HashMap<String, String> =
                    serde_json::from_str(raw).map_err(|_| runtime_secrets::SecretError::Malformed {
                        name: "the provider keys secret".into(),
                        reason: "expected JSON {\"cerebras\": \"…\", \"neevcloud\": \"…\"}".into(),
                    })?;
                let value = keys.get(&field).map(String::as_str).unwrap_or_default();
                runtime_secrets::checked(&format!("the provider keys secret's {field}"), value, PROVIDER_KEY)
            };
            let key = Rotating::load(Arc::clone(&source), parse, Arc::clone(&clock)).await?;
            if let Some(provider) = providers.by_name.get_mut(&name) {
                provider.api_key = Some(Arc::new(key));
            }
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
    /// Busy accounts' budget leases: their calls' holds come from memory, not the store.
    leases: Leases,
    /// Whether calls may be served from leases (see [`Gateway::one_call_at_a_time`]).
    leases_on: bool,
    /// A Lambda instance's purses (see [`Gateway::one_call_at_a_time`]); without them, each call holds on
    /// the wallet itself.
    purses: Option<Arc<metering::Purses>>,
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
            leases: Leases::default(),
            leases_on: true,
            purses: None,
        })
    }

    /// For a process that serves one call at a time and is frozen between calls (a Lambda instance): no
    /// leases, so it reserves nothing but its current call's hold. A lease would stay reserved while the
    /// instance sleeps (minutes, or for ever), and a few frozen instances' leases would refuse calls the
    /// balance covers; one call at a time, a lease saves nothing anyway.
    pub fn one_call_at_a_time(mut self) -> Self {
        self.leases_on = false;
        self.purses = Some(Arc::new(metering::Purses::new()));
        self
    }

    /// Shortens the key cache's lifetime (tests of revocation).
    pub fn with_key_cache_ttl(mut self, ttl: Duration) -> Self {
        self.key_ttl = ttl;
        self
    }

    /// Resolves a presented API key, from the cache when it was looked up in the last minute.
    pub async fn authenticate(&self, state: &CallContext, presented: Option<&str>) -> ApiResult<KeyOwner> {
        let invalid = || {
            ApiError::Unauthenticated {
            code: ErrorCode::InvalidApiKey,
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
    pub fn note_use(&self, state: &CallContext, owner: &KeyOwner) {
        let due = self.uses.lock().is_ok_and(|mut uses| {
            let due = uses.get(&owner.key_id).is_none_or(|at| at.elapsed() >= Duration::from_secs(60));
            if due {
                if uses.len() >= KEYS_TRACKED && !uses.contains_key(&owner.key_id) {
                    // Bounded: forgetting only costs a few early `last_used_at` writes.
                    uses.retain(|_, at| at.elapsed() < Duration::from_secs(60));
                    if uses.len() >= KEYS_TRACKED {
                        uses.clear();
                    }
                }
                uses.insert(owner.key_id.clone(), Instant::now());
            }
            due
        });
        if due {
            let (store, owner, at) = (state.store.clone(), owner.clone(), state.clock.now());
            crate::tasks::spawn("key use", async move {
                if let Err(e) = crate::keys::record_use(store.as_ref(), &owner, at).await {
                    tracing::warn!(error = %e, key_id = %owner.key_id, "recording key use failed");
                }
            });
        }
    }

    /// How many of the account's calls are running on a budget lease of this process (their holds are not on
    /// the wallet one by one, so only this process can tell).
    pub fn lease_calls_running(&self, user_id: &str) -> usize {
        self.leases.running(user_id)
    }

    /// A graceful shutdown: the leases go back now rather than wait for the sweeper (see
    /// `Leases::return_all`); returns how many are left for it.
    pub async fn return_leases(&self, patience: Duration) -> usize {
        self.leases.return_all(patience).await
    }

    /// How many budget leases this process has opened.
    pub fn leases_opened(&self) -> usize {
        self.leases.opened()
    }

    pub fn model(&self, id: &str) -> ApiResult<&Model> {
        self.catalog.model(id).ok_or_else(|| ApiError::NotFound {
            code: ErrorCode::ModelNotFound,
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

/// Counts the bytes written to it.
struct ByteCount(u64);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An upper bound of the prompt's tokens without a tokenizer, over the whole request as forwarded: every
/// field counts (tools, tool calls, names, response formats, fields we do not know), since a provider may
/// render any of them into the prompt. Each token of a byte-level tokenizer stands for at least one byte,
/// and no chat template renders a request in more bytes than its JSON indented by four spaces (the widest
/// any template prints tool schemas); the model's template then adds its own tokens, per request and per
/// message or tool.
pub fn prompt_token_bound(model: &Model, body: &Value) -> u64 {
    use serde::Serialize;
    let mut bytes = ByteCount(0);
    let mut json =
        serde_json::Serializer::with_formatter(&mut bytes, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    // Writing to a counter cannot fail.
    let _ = body.serialize(&mut json);
    let parts: u64 = ["messages", "tools", "functions"]
        .iter()
        .filter_map(|field| body.get(*field).and_then(Value::as_array))
        .map(|items| items.len() as u64)
        .sum();
    // Tool-call arguments are JSON in a string: servers parse them and templates print them again with
    // wider separators, so they count twice.
    let arguments: u64 = body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.pointer("/function/arguments").and_then(Value::as_str))
        .map(|a| a.len() as u64)
        .sum();
    bytes.0
        + arguments
        + u64::from(model.template_tokens_per_request)
        + parts * u64::from(model.template_tokens_per_message)
}

/// `chat_template_kwargs` keys a template may be given: switches that do not add prompt text of their own.
const TEMPLATE_KWARGS_ALLOWED: [&str; 2] = ["enable_thinking", "reasoning_effort"];

/// Fields that would let a caller change how the provider renders the prompt beyond what the hold can
/// bound: a request-level chat template, and template arguments that add text (built-in tool preambles).
fn check_template_fields(body: &Value) -> ApiResult<()> {
    if present(body, "chat_template").is_some() {
        return Err(ApiError::invalid(
            ErrorCode::UnsupportedParameter,
            "chat_template",
            "chat_template is not supported: the model's own template is used",
        ));
    }
    match present(body, "chat_template_kwargs") {
        None => Ok(()),
        Some(Value::Object(kwargs)) if kwargs.keys().all(|k| TEMPLATE_KWARGS_ALLOWED.contains(&k.as_str())) => Ok(()),
        Some(_) => Err(ApiError::invalid(
            ErrorCode::UnsupportedParameter,
            "chat_template_kwargs",
            format!("chat_template_kwargs may hold only {}", TEMPLATE_KWARGS_ALLOWED.join(", ")),
        )),
    }
}

/// A field that is present and not `null` (`null` means absent everywhere).
fn present<'a>(body: &'a Value, field: &str) -> Option<&'a Value> {
    body.get(field).filter(|v| !v.is_null())
}

/// The output cap to hold and write upstream: `max_completion_tokens` or `max_tokens` (equal if both are
/// sent), else the model's cap. Never left to the provider's default (which may be the rest of the context).
fn requested_max_tokens(body: &Value, model: &Model) -> ApiResult<u64> {
    let mut requested: Option<(&str, u64)> = None;
    for param in OUTPUT_CAP_PARAMS {
        let Some(value) = present(body, param) else { continue };
        let n = value.as_u64().filter(|n| (1..=u64::from(model.max_output_tokens)).contains(n)).ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::InvalidMaxTokens,
                param,
                format!("{param} must be an integer from 1 to {} for {}", model.max_output_tokens, model.id),
            )
        })?;
        match requested {
            Some((other, held)) if held != n => {
                return Err(ApiError::invalid(
                    ErrorCode::ConflictingMaxTokens,
                    param,
                    format!("{param} ({n}) differs from {other} ({held}); send one output cap"),
                ));
            }
            _ => requested = Some((param, n)),
        }
    }
    Ok(requested.map_or(u64::from(model.max_output_tokens), |(_, n)| n))
}

/// `n` and `best_of` may be absent, `null` or 1: one completion per request. More would multiply what the
/// provider generates; the gateway answers 400 rather than hold for many (see the README).
fn check_single_completion(body: &Value) -> ApiResult<()> {
    for param in ["n", "best_of"] {
        match present(body, param).map(Value::as_u64) {
            None | Some(Some(1)) => {}
            Some(Some(n)) if n > 1 => {
                return Err(ApiError::invalid(
                    ErrorCode::UnsupportedParameter,
                    param,
                    format!("{param} greater than 1 is not supported: send one request per completion"),
                ));
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidParameter,
                    param,
                    format!("{param} must be the integer 1"),
                ));
            }
        }
    }
    Ok(())
}

/// A completions prompt: one string, or one prompt of token ids (a flat array, or an array holding one
/// string or one token array). Batches of prompts are refused for the same reason as `n`.
fn check_single_prompt(prompt: &Value) -> ApiResult<()> {
    let tokens = |v: &Value| v.as_array().is_some_and(|t| !t.is_empty() && t.iter().all(Value::is_u64));
    match prompt {
        Value::String(_) => Ok(()),
        Value::Array(_) if tokens(prompt) => Ok(()),
        Value::Array(items) if items.len() == 1 && (items[0].is_string() || tokens(&items[0])) => Ok(()),
        Value::Array(items) if items.len() > 1 => Err(ApiError::invalid(
            ErrorCode::UnsupportedParameter,
            "prompt",
            "batched prompts are not supported: send one prompt per request",
        )),
        _ => Err(ApiError::invalid(
            ErrorCode::InvalidPrompt,
            "prompt",
            "prompt must be a string or an array of token ids",
        )),
    }
}

/// `stream` must be a JSON boolean (a string "true" is refused, never read as false).
fn requested_stream(body: &Value) -> ApiResult<(bool, bool)> {
    let stream = match present(body, "stream") {
        None => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Err(ApiError::invalid(ErrorCode::InvalidType, "stream", "stream must be a boolean")),
    };
    let include_usage = match present(body, "stream_options") {
        None => false,
        Some(Value::Object(options)) => match options.get("include_usage").filter(|v| !v.is_null()) {
            None => false,
            Some(Value::Bool(include)) => *include,
            Some(_) => {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidType,
                    "stream_options.include_usage",
                    "stream_options.include_usage must be a boolean",
                ));
            }
        },
        Some(_) => {
            return Err(ApiError::invalid(ErrorCode::InvalidType, "stream_options", "stream_options must be an object"));
        }
    };
    Ok((stream, include_usage))
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
    /// When the request arrived: every deadline of the call counts from here.
    pub arrived: Instant,
}

pub fn prepare(gateway: &Gateway, endpoint: Endpoint, body: Value, request_id: String) -> ApiResult<Prepared> {
    let arrived = Instant::now();
    let Value::Object(_) = &body else {
        return Err(ApiError::InvalidRequest {
            code: ErrorCode::InvalidJson,
            message: "request body must be a JSON object".into(),
            param: None,
        });
    };
    let model_id = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(ErrorCode::MissingField, "model", "model is required"))?;
    let model = gateway.model(model_id)?.clone();
    match endpoint {
        Endpoint::ChatCompletions if !body.get("messages").is_some_and(Value::is_array) => {
            return Err(ApiError::invalid(ErrorCode::MissingField, "messages", "messages must be an array"));
        }
        Endpoint::Completions => match present(&body, "prompt") {
            None => return Err(ApiError::invalid(ErrorCode::MissingField, "prompt", "prompt is required")),
            Some(prompt) => check_single_prompt(prompt)?,
        },
        _ => {}
    }
    check_single_completion(&body)?;
    check_template_fields(&body)?;
    let (stream, client_wants_usage) = requested_stream(&body)?;
    Ok(Prepared {
        request_id,
        endpoint,
        prompt_bound: prompt_token_bound(&model, &body),
        max_tokens: requested_max_tokens(&body, &model)?,
        model,
        body,
        stream,
        client_wants_usage,
        arrived,
    })
}

impl Prepared {
    /// The most this request can cost: the prompt's upper bound plus every token it may generate.
    pub fn max_cost(&self) -> i64 {
        self.model.cost(self.prompt_bound, self.max_tokens)
    }

    /// What the provider could have billed at most: used when a call reached it but its usage is unknown.
    fn usage_upper_bound(&self) -> Usage {
        Usage { prompt_tokens: self.prompt_bound, completion_tokens: self.max_tokens, estimated: true }
    }

    /// The request as the route receives it: the route's model name, the output cap that was held in every
    /// parameter the route honours (and no other cap), `stream` spelled out, and the usage chunk asked for.
    fn upstream_body(&self, route: &Route) -> Value {
        let mut body = self.body.clone();
        if let Value::Object(fields) = &mut body {
            fields.insert("model".into(), json!(route.model));
            for param in OUTPUT_CAP_PARAMS {
                fields.remove(param);
            }
            match self.endpoint {
                Endpoint::ChatCompletions => {
                    for param in &route.output_cap_params {
                        fields.insert(param.clone(), json!(self.max_tokens));
                    }
                }
                Endpoint::Completions => {
                    fields.insert("max_tokens".into(), json!(self.max_tokens));
                }
            }
            fields.insert("stream".into(), json!(self.stream));
            if self.stream {
                fields.insert("stream_options".into(), json!({ "include_usage": true }));
            } else {
                fields.remove("stream_options");
            }
        }
        body
    }

    /// What is left of the upstream deadline.
    fn upstream_time_left(&self) -> Duration {
        UPSTREAM_DEADLINE.saturating_sub(self.arrived.elapsed())
    }

    /// When settlement stops retrying.
    fn settle_deadline(&self) -> Instant {
        self.arrived + UPSTREAM_DEADLINE + SETTLE_BUDGET
    }
}

/// Token counts reported by (or estimated for) a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub estimated: bool,
}

/// No real call has more tokens than this; a report above it is clamped (and then charged in full).
const MAX_REPORTED_TOKENS: u64 = 1 << 32;

/// A usage report, only when both counts are non-negative integers (anything else counts as no report);
/// `total_tokens`, when larger than their sum, raises the completion count to match.
fn reported_usage(value: &Value) -> Option<Usage> {
    let usage = value.get("usage").filter(|u| u.is_object())?;
    let count = |field: &str| usage.get(field).and_then(Value::as_u64).map(|n| n.min(MAX_REPORTED_TOKENS));
    let prompt_tokens = count("prompt_tokens")?;
    let mut completion_tokens = count("completion_tokens")?;
    if let Some(total) = count("total_tokens") {
        completion_tokens = completion_tokens.max(total.saturating_sub(prompt_tokens));
    }
    Some(Usage { prompt_tokens, completion_tokens, estimated: false })
}

impl Usage {
    /// Several usage reports in one stream: each count at its largest.
    fn merge(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.max(other.prompt_tokens),
            completion_tokens: self.completion_tokens.max(other.completion_tokens),
            estimated: self.estimated || other.estimated,
        }
    }
}

/// Bytes of everything generated in an answer or a streamed chunk: text, reasoning, refusals, and tool
/// and function calls (names and arguments). Each token is at least one byte, so as a token count this is
/// an estimate from above, for calls whose usage the provider never reported.
fn generated_bytes(value: &Value) -> u64 {
    fn text(v: Option<&Value>) -> u64 {
        v.and_then(Value::as_str).map_or(0, |s| s.len() as u64)
    }
    fn call(v: Option<&Value>) -> u64 {
        v.map_or(0, |c| text(c.get("name")) + text(c.get("arguments")))
    }
    let Some(choices) = value.get("choices").and_then(Value::as_array) else { return 0 };
    choices
        .iter()
        .map(|choice| {
            let mut bytes = text(choice.get("text"));
            for part in ["message", "delta"].iter().filter_map(|p| choice.get(*p)) {
                bytes += ["content", "reasoning_content", "reasoning", "refusal"]
                    .iter()
                    .map(|field| text(part.get(*field)))
                    .sum::<u64>();
                bytes += call(part.get("function_call"));
                if let Some(calls) = part.get("tool_calls").and_then(Value::as_array) {
                    bytes += calls.iter().map(|c| call(c.get("function")) + text(c.get("id"))).sum::<u64>();
                }
            }
            bytes
        })
        .sum()
}

/// Tokens a provider bills but strips from the text it returns: end-of-sequence, channel headers, tool-call
/// wrappers, a matched stop string.
const GENERATION_ALLOWANCE: u64 = 32;

impl Prepared {
    /// The usage of a call the provider answered without a report: the prompt's bound, and every generated
    /// byte as a token, at most the output cap.
    fn estimated_usage(&self, generated: u64) -> Usage {
        let completion_tokens = generated.saturating_add(GENERATION_ALLOWANCE).min(self.max_tokens);
        Usage { prompt_tokens: self.prompt_bound, completion_tokens, estimated: true }
    }
}

/// What an upstream attempt produced before any byte reached the client.
enum Attempt {
    /// A non-streaming answer (status, JSON object).
    Complete { provider: String, status: u16, body: Value },
    /// A streaming answer, not yet read.
    Streaming { provider: String, response: reqwest::Response },
    /// The provider accepted the request (2xx) but its answer was unreadable or never arrived in full: it
    /// may have billed us the whole call, so it is not tried elsewhere and the caller pays the upper bound.
    Unreadable { provider: String },
}

/// A 4xx the provider answered at once: never retried elsewhere. A 400 or 422 is about the request, and
/// its message is passed on (with our model id for the provider's model name); anything else says nothing
/// of the provider.
fn request_error_from_upstream(status: u16, body: &Value, route: &Route, model: &Model) -> ApiError {
    let message = body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("the model provider rejected the request")
        .replace(&route.model, &model.id)
        .chars()
        .take(1000)
        .collect::<String>();
    let param = body.pointer("/error/param").and_then(Value::as_str).map(str::to_owned);
    match status {
        400 | 422 => ApiError::InvalidRequest { code: ErrorCode::UpstreamInvalidRequest, message, param },
        413 => ApiError::PayloadTooLarge { limit_bytes: MAX_INFERENCE_BODY_BYTES },
        404 => ApiError::BadGateway {
            code: ErrorCode::UpstreamModelUnavailable,
            message: "the model is not available from its provider right now".into(),
        },
        _ => ApiError::BadGateway {
            code: ErrorCode::UpstreamError,
            message: "the model provider refused the call".into(),
        },
    }
}

/// Whether an upstream status is a failure on our side of the provider (its outage, our credentials, quota
/// or billing with it): the next route is tried, and the caller never sees the provider's words.
fn is_provider_side_failure(status: u16) -> bool {
    matches!(status, 401 | 402 | 403 | 408 | 409 | 429) || status >= 500
}

/// A timeout is a 504; any other transport failure a 502 with the given code and message.
fn transport_failure(e: &reqwest::Error, code: ErrorCode, message: &str) -> ApiError {
    if e.is_timeout() {
        ApiError::GatewayTimeout { message: "the model provider did not answer in time".into() }
    } else {
        ApiError::BadGateway { code, message: message.into() }
    }
}

/// Tries each configured route in order. Falls back on connect errors, timeouts and failures on the
/// provider's side (5xx, 429, and 401/402/403: our key, quota or billing there); nothing has reached the
/// client yet. Any other 4xx is the request's fault and is answered at once.
async fn forward(gateway: &Gateway, prepared: &Prepared) -> ApiResult<Attempt> {
    let mut last = ApiError::BadGateway {
        code: ErrorCode::NoRoute,
        message: format!("no provider is configured for {}", prepared.model.id),
    };
    for route in &prepared.model.routes {
        let Some(provider) = gateway.providers.get(&route.provider) else { continue };
        let time_left = prepared.upstream_time_left();
        if time_left.is_zero() {
            return Err(ApiError::GatewayTimeout { message: "the model provider did not answer in time".into() });
        }
        let url = format!("{}{}", provider.base_url.trim_end_matches('/'), prepared.endpoint.path());
        let mut request = gateway.http.post(&url).json(&prepared.upstream_body(route));
        // The timeout covers the whole answer, body included; a stream is bounded by the deadline alone.
        request = request.timeout(if prepared.stream { time_left } else { time_left.min(NON_STREAMING_TIMEOUT) });
        if let Some(key) = &provider.api_key {
            request = request.bearer_auth(key.current().await.expose());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(provider = %provider.name, timeout = e.is_timeout(), "upstream unreachable; trying the next route");
                last = transport_failure(&e, ErrorCode::UpstreamUnavailable, "the model provider is unreachable");
                continue;
            }
        };
        let status = response.status().as_u16();
        if is_provider_side_failure(status) {
            tracing::warn!(provider = %provider.name, status, "upstream failed on its side; trying the next route");
            last = if status >= 500 {
                ApiError::BadGateway {
                    code: ErrorCode::UpstreamError,
                    message: "the model provider failed to answer".into(),
                }
            } else {
                ApiError::Unavailable("the model is temporarily unavailable; try again shortly".into())
            };
            continue;
        }
        if status >= 400 {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            return Err(request_error_from_upstream(status, &body, route, &prepared.model));
        }
        if prepared.stream {
            return Ok(Attempt::Streaming { provider: provider.name.clone(), response });
        }
        let body = match response.bytes().await {
            Ok(bytes) => serde_json::from_slice::<Value>(&bytes).ok().filter(Value::is_object),
            Err(_) => None,
        };
        return Ok(match body {
            Some(body) => Attempt::Complete { provider: provider.name.clone(), status, body },
            None => {
                tracing::error!(provider = %provider.name, status, "the provider accepted the call but its answer was unreadable");
                Attempt::Unreadable { provider: provider.name.clone() }
            }
        });
    }
    Err(last)
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

async fn settle_call(state: &CallContext, facts: CallFacts<'_>, usage: Usage, status: &str) -> ApiResult<UsageRecord> {
    let model = &facts.prepared.model;
    let record = UsageRecord {
        id: facts.prepared.request_id.clone(),
        key_id: facts.owner.key_id.clone(),
        model: model.id.clone(),
        provider: facts.provider,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.prompt_tokens.saturating_add(usage.completion_tokens),
        cost: 0,
        latency_ms: u64::try_from(facts.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ttft_ms: facts.ttft.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        status: status.into(),
        estimated: usage.estimated,
        over_hold: 0,
        created_at: state.clock.now(),
    };
    let cost = model.cost(usage.prompt_tokens, usage.completion_tokens);
    let expiry = metering::expiries(&state.config, state.clock.now());
    let deadline = facts.prepared.settle_deadline();
    let settled =
        metering::settle(state.store.as_ref(), facts.balances, facts.hold, cost, record, expiry, deadline).await;
    // A call settled gives its hold back to its lease; one that could not stays on the lease's record for
    // the sweeper to charge.
    if let Some(lease) = &facts.hold.lease {
        match &settled {
            Ok(_) => lease.reserve.clone().finished(&facts.hold.id),
            Err(_) => lease.reserve.clone().abandoned(&facts.hold.id),
        }
    }
    // A purse posts what it spent to the wallet now and then, within the invocation (never after it).
    if let Some(book) = facts.hold.purse.as_ref().and_then(|purse| purse.book.as_ref()) {
        let (store, clock) = (state.store.as_ref(), state.clock.as_ref());
        if let Err(e) = book.post_if_due(store, clock, &facts.hold.user_id, expiry).await {
            tracing::warn!(error = %e, "a purse's spending not posted yet; the next call or the sweeper posts it");
        }
    }
    settled
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
pub async fn call(state: &CallContext, gateway: &Gateway, owner: KeyOwner, prepared: Prepared) -> ApiResult<Answer> {
    let started = Instant::now();
    let balances = gateway.balances.as_ref();
    let held_call = metering::HeldCall {
        request_id: prepared.request_id.clone(),
        key_id: owner.key_id.clone(),
        model: prepared.model.id.clone(),
        prompt_tokens: prepared.prompt_bound,
        completion_tokens: prepared.max_tokens,
    };
    let hold = if gateway.leases_on {
        gateway
            .leases
            .hold(&state.store, &state.clock, balances, &owner.user_id, prepared.max_cost(), &held_call)
            .await?
    } else if let Some(purses) = &gateway.purses {
        let (store, clock) = (state.store.as_ref(), state.clock.as_ref());
        purses.hold(store, clock, &owner.user_id, prepared.max_cost().max(1), &held_call).await?
    } else {
        let (store, clock) = (state.store.as_ref(), state.clock.as_ref());
        metering::place_call_hold(store, clock, balances, &owner.user_id, prepared.max_cost().max(1), &held_call)
            .await?
    };
    // A hold of its own says while it runs that its call is alive (a lease's keeper records its calls).
    let beating = hold.lease.is_none().then(|| {
        crate::wallet::metering::keep_beating(
            Arc::clone(&state.store),
            Arc::clone(&state.clock),
            &hold.user_id,
            &hold.id,
        )
    });
    let attempt = match forward(gateway, &prepared).await {
        Ok(attempt) => attempt,
        Err(e) => {
            release_unused(state, &hold).await;
            return Err(e);
        }
    };
    match attempt {
        Attempt::Complete { provider, status, mut body } => {
            let usage = reported_usage(&body).unwrap_or_else(|| prepared.estimated_usage(generated_bytes(&body)));
            let facts =
                CallFacts { owner: &owner, prepared: &prepared, hold: &hold, balances, provider, started, ttft: None };
            // The answer exists and the provider billed it: the caller gets it even if the wallet could not
            // be settled in time, since the hold (and the usage recorded beside it) leaves it to the sweeper
            // to charge; refusing it would make a retry pay twice.
            if let Err(e) = settle_call(state, facts, usage, "ok").await {
                tracing::error!(error = %e, request_id = %prepared.request_id, "settlement left to the sweeper");
            }
            if let Some(fields) = body.as_object_mut() {
                fields.insert("model".into(), json!(prepared.model.id));
            }
            Ok(Answer::Complete(Completed { status, body }))
        }
        Attempt::Unreadable { provider } => {
            let facts =
                CallFacts { owner: &owner, prepared: &prepared, hold: &hold, balances, provider, started, ttft: None };
            settle_call(state, facts, prepared.usage_upper_bound(), "upstream_error").await?;
            Err(ApiError::BadGateway {
                code: ErrorCode::UpstreamError,
                message: "the model provider sent an unreadable answer".into(),
            })
        }
        Attempt::Streaming { provider, response } => {
            let (tx, rx) = mpsc::channel(64);
            let (state, balances) = (state.clone(), gateway.balances.clone());
            let call = StreamCall { state, balances, owner, prepared, hold, provider, started, beating };
            crate::tasks::spawn("stream relay", relay_stream(call, response, tx));
            Ok(Answer::Stream(rx))
        }
    }
}

/// Gives back the hold of a call that never reached a provider, retrying a failing store a few times; a hold
/// left behind would be charged in full by the sweeper.
async fn release_unused(state: &CallContext, hold: &Hold) {
    if let Some(lease) = &hold.lease {
        // Served from a lease: the hold goes back to it, with no store write.
        lease.reserve.clone().finished(&hold.id);
        return;
    }
    for attempt in 0..3u32 {
        let released = match &hold.purse {
            Some(_) => metering::release_in_purse(state.store.as_ref(), hold).await,
            None => metering::release(state.store.as_ref(), &hold.user_id, &hold.id, hold.amount).await,
        };
        match released {
            Ok(_) => return,
            Err(e) => {
                tracing::error!(error = %e, hold_id = %hold.id, attempt, "releasing an unused hold failed");
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        }
    }
}

/// One streaming call's facts, moved into the task that relays it.
struct StreamCall {
    state: CallContext,
    balances: Arc<BalanceHints>,
    owner: KeyOwner,
    prepared: Prepared,
    hold: Hold,
    provider: String,
    started: Instant,
    /// Beats until the settlement is over.
    beating: Option<crate::wallet::metering::Beating>,
}

/// What reading a provider's stream has learned so far.
#[derive(Default)]
struct StreamReading {
    usage: Option<Usage>,
    /// Bytes of generated text (and tool-call arguments) seen, for an estimate when no usage is reported.
    generated: u64,
    /// An event whose data we could not read: what it generated is unknown.
    unreadable: bool,
    /// `[DONE]` was read.
    finished: bool,
    ttft: Option<Duration>,
}

impl StreamReading {
    /// Reads one whole event (parsed once: for its usage, its generated text and the public model id) and
    /// says what reaches the client.
    fn read(&mut self, event: &[u8], prepared: &Prepared) -> Relay {
        let Some(data) = event_data(event) else { return Relay::AsReceived };
        if data == "[DONE]" {
            self.finished = true;
            return Relay::Drop;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(&data) else {
            self.unreadable = true;
            return Relay::AsReceived;
        };
        self.generated += generated_bytes(&value);
        if let Some(reported) = reported_usage(&value) {
            self.usage = Some(self.usage.map_or(reported, |seen| seen.merge(reported)));
            let only_usage = value.get("choices").and_then(Value::as_array).is_none_or(Vec::is_empty);
            if only_usage && !prepared.client_wants_usage {
                return Relay::Drop;
            }
        }
        match value.as_object_mut().filter(|f| f.contains_key("model")) {
            Some(fields) => {
                fields.insert("model".into(), json!(prepared.model.id));
                Relay::Rewritten(format!("data: {value}\n\n").into_bytes())
            }
            None => Relay::AsReceived,
        }
    }

    /// What the call is charged for, once the stream ended (`complete`: with `[DONE]` and no error).
    fn usage(&self, complete: bool, prepared: &Prepared) -> Usage {
        match self.usage {
            // The provider's report, unless the stream did not end cleanly: a report seen before a cut may be
            // partial (or a decoy), so then the call costs at least its upper bound.
            Some(reported) if complete => reported,
            Some(reported) => reported.merge(prepared.usage_upper_bound()),
            // The whole answer was read: every generated byte counts as a token.
            None if complete && !self.unreadable => prepared.estimated_usage(self.generated),
            // Cut short, unreadable, or the client left before the end could be read: the provider may have
            // generated (and billed) all it was allowed to, so the call costs its upper bound; leaving never
            // costs less.
            None => prepared.usage_upper_bound(),
        }
    }
}

/// How relaying a stream ended.
struct StreamEnd {
    /// The provider's stream reached its end: nothing more can be read from it.
    upstream_ended: bool,
    /// The provider's stream broke (a read error, or no event end within the size limit).
    failed: bool,
    /// The client stopped reading; the provider's stream was read on for its usage.
    client_gone: bool,
}

/// Relays an upstream SSE stream to the client, learning the usage on the way. The end of the answer (the
/// `[DONE]` event, or the error event of a stream cut short) is sent only after settlement has committed,
/// so a call the client saw complete has always been charged, and in Lambda the invocation lasts until it
/// is. A client that goes away stops nothing: the upstream is read on (within the deadline) for its usage.
async fn relay_stream(call: StreamCall, response: reqwest::Response, tx: mpsc::Sender<Result<Bytes, std::io::Error>>) {
    let mut upstream = response.bytes_stream();
    let mut reading = StreamReading::default();
    let end = relay_events(&mut upstream, &mut reading, &call, &tx).await;
    let complete = reading.finished && !end.failed;
    let status = if end.client_gone {
        "client_disconnected"
    } else if complete {
        "ok"
    } else {
        "upstream_error"
    };
    let usage = reading.usage(complete, &call.prepared);
    let StreamCall { state, balances, owner, prepared, hold, provider, started, beating } = call;
    let facts = CallFacts {
        owner: &owner,
        prepared: &prepared,
        hold: &hold,
        balances: &balances,
        provider,
        started,
        ttft: reading.ttft,
    };
    if let Err(e) = settle_call(&state, facts, usage, status).await {
        // The hold, and the usage recorded beside it, leave the charge to the sweeper.
        tracing::error!(error = %e, request_id = %prepared.request_id, "stream settlement left to the sweeper");
    }
    drop(beating);
    if !end.client_gone {
        let last = if complete {
            Bytes::from_static(b"data: [DONE]\n\n")
        } else {
            let error = json!({ "error": { "type": "api_error", "code": ErrorCode::UpstreamError.as_str(), "message": "the model provider ended the stream early", "param": null } });
            Bytes::from(format!("data: {error}\n\n"))
        };
        let _ = tx.send(Ok(last)).await;
    }
    drop(tx);
    if reading.finished && !end.upstream_ended {
        drain_rest(&mut upstream).await;
    }
}

/// Reads the provider's events and relays whole ones to the client, until `[DONE]`, the end of the stream,
/// an error, or (after the client left) the drain limit.
async fn relay_events(
    upstream: &mut (impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Unpin),
    reading: &mut StreamReading,
    call: &StreamCall,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> StreamEnd {
    let mut buffer = Vec::new();
    let mut end = StreamEnd { upstream_ended: false, failed: false, client_gone: false };
    let mut drain_started: Option<Instant> = None;
    while !reading.finished {
        let chunk = match upstream.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(_)) => {
                end.failed = true;
                return end;
            }
            None => {
                // A last event without its blank line still counts.
                end.upstream_ended = true;
                if buffer.iter().all(u8::is_ascii_whitespace) {
                    return end;
                }
                Bytes::from_static(b"\n\n")
            }
        };
        if drain_started.is_some_and(|at| at.elapsed() > DRAIN_LIMIT_TIME) {
            return end;
        }
        buffer.extend_from_slice(&chunk);
        if buffer.len() > MAX_EVENT_BYTES {
            // No event end in sight: not a stream we can read (and memory is bounded).
            end.failed = true;
            return end;
        }
        // Relay whole events only, so that a usage chunk can be dropped.
        while let Some(event_end) = find_event_end(&buffer) {
            let event: Vec<u8> = buffer.drain(..event_end).collect();
            let relay = reading.read(&event, &call.prepared);
            if reading.ttft.is_none() {
                reading.ttft = Some(call.started.elapsed());
            }
            let bytes = match relay {
                Relay::AsReceived => event,
                Relay::Rewritten(bytes) => bytes,
                // `[DONE]` ends the reading; nothing after it is relayed.
                Relay::Drop if reading.finished => break,
                Relay::Drop => continue,
            };
            if !end.client_gone && tx.send(Ok(Bytes::from(bytes))).await.is_err() {
                end.client_gone = true;
                drain_started = Some(Instant::now());
            }
        }
        if end.upstream_ended {
            return end;
        }
    }
    end
}

/// Reads the provider's stream to its end (normally nothing follows `[DONE]`), briefly and boundedly, so
/// that its connection goes back to the pool instead of being dropped mid-body.
async fn drain_rest(upstream: &mut (impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Unpin)) {
    let rest = async {
        let mut read = 0usize;
        while let Some(Ok(chunk)) = upstream.next().await {
            read += chunk.len();
            if read > MAX_EVENT_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), rest).await;
}

/// What happens to one upstream event on its way to the client.
enum Relay {
    AsReceived,
    /// With the public model id in place of the provider's.
    Rewritten(Vec<u8>),
    /// A usage-only chunk the client did not ask for.
    Drop,
}

/// SSE events end with a blank line (`\n\n`, or `\r\n\r\n` from servers that write CRLF): one pass over
/// the line ends.
fn find_event_end(buffer: &[u8]) -> Option<usize> {
    let mut lines = buffer.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i);
    let mut previous = lines.next()?;
    for end in lines {
        // The line between two line ends is empty (or a lone `\r`).
        if end == previous + 1 || (end == previous + 2 && buffer[previous + 1] == b'\r') {
            return Some(end + 1);
        }
        previous = end;
    }
    None
}

/// The data of an event: its `data:` lines joined by newlines, as the SSE specification reads them
/// (borrowed in the usual case of a single line).
fn event_data(event: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    let text = std::str::from_utf8(event).ok()?;
    let mut lines = text.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d));
    let first = lines.next()?;
    match lines.next() {
        None => Some(std::borrow::Cow::Borrowed(first.trim())),
        Some(second) => {
            let mut joined = [first, second].join("\n");
            for line in lines {
                joined.push('\n');
                joined.push_str(line);
            }
            Some(std::borrow::Cow::Owned(joined.trim().to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_end_at_a_blank_line_in_either_framing() {
        assert_eq!(find_event_end(b"data: a\n\ndata: b\n\n"), Some(9));
        assert_eq!(find_event_end(b"data: a\r\n\r\ndata: b"), Some(11));
        assert_eq!(find_event_end(b"data: a\ndata: b\n"), None);
        assert_eq!(find_event_end(b"data: a\r\n"), None);
        assert_eq!(find_event_end(b""), None);
    }

    #[test]
    fn event_data_joins_its_data_lines() {
        assert_eq!(event_data(b"data: {\"a\":1}\n\n").as_deref(), Some("{\"a\":1}"));
        assert_eq!(event_data(b"data:[DONE]\r\n\r\n").as_deref(), Some("[DONE]"));
        assert_eq!(event_data(b"event: x\ndata: {\"a\":\ndata: 1}\n\n").as_deref(), Some("{\"a\":\n1}"));
        assert_eq!(event_data(b": comment\n\n"), None);
    }
}
