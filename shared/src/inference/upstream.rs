//! Forwarding to the model's provider routes with fallback, and reading the usage a provider reports (or
//! estimating it from above when it reports none).

use serde_json::Value;

use super::back_pressure::{more_telling, provider_side_error, retry_after};
use super::context::ContextRefusal;
use super::request::Prepared;
use super::{Gateway, MAX_INFERENCE_BODY_BYTES, Provider};
use crate::catalog::Route;
use crate::error::{ApiError, ApiResult, ErrorCode};

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
pub(super) fn reported_usage(value: &Value) -> Option<Usage> {
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
    pub(super) fn merge(self, other: Usage) -> Usage {
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
pub(super) fn generated_bytes(value: &Value) -> u64 {
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
    pub(super) fn estimated_usage(&self, generated: u64) -> Usage {
        let completion_tokens = generated.saturating_add(GENERATION_ALLOWANCE).min(self.max_tokens);
        Usage { prompt_tokens: self.prompt_bound, completion_tokens, estimated: true }
    }
}

/// What an upstream attempt produced before any byte reached the client.
pub(super) enum Attempt {
    /// A non-streaming answer (status, JSON object).
    Complete { provider: String, status: u16, body: Value },
    /// A streaming answer, not yet read.
    Streaming { provider: String, response: reqwest::Response },
    /// The provider took the request but its answer was unreadable or never arrived (`timed_out`: not in
    /// time): it may have billed us the whole call, so it is not tried elsewhere and the caller pays the
    /// upper bound.
    Unreadable { provider: String, timed_out: bool },
}

/// A 4xx the provider answered at once: never retried elsewhere. A 400 or 422 is about the request: a
/// refusal for the context is answered as `context_length_exceeded` with the provider's counts; any other
/// message is passed on (with our model id for the provider's model name); anything else says nothing of
/// the provider.
fn request_error_from_upstream(status: u16, body: &Value, route: &Route, prepared: &Prepared) -> ApiError {
    let model = &prepared.model;
    if let Some(refusal) = context_refusal(status, body) {
        let cap = prepared.client_cap.map(|param| (param, prepared.max_tokens));
        if refusal.context != u64::from(model.context_length) {
            tracing::warn!(model = %model.id, provider_context = refusal.context, "the provider's context differs from the catalogue's");
        }
        return refusal.error(model, prepared.prompt_param(), cap);
    }
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

/// An error body's message: OpenAI's `{"error": {"message"}}` or older vLLM's `{"object": "error", "message"}`.
fn error_message(body: &Value) -> Option<&str> {
    body.pointer("/error/message").or_else(|| body.get("message")).and_then(Value::as_str)
}

/// A 400 saying the prompt and the output cap do not fit the context, with the provider's counts.
fn context_refusal(status: u16, body: &Value) -> Option<ContextRefusal> {
    (status == 400).then(|| error_message(body).and_then(ContextRefusal::read)).flatten()
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

/// Tries each configured route in order. Falls back on connection failures (the request never reached the
/// provider) and failures on the provider's side (5xx, 429, and 401/402/403: our key, quota or billing
/// there); nothing has reached the client yet. A request the provider received but never answered in time
/// is not sent elsewhere: the provider may be generating (and billing) it. Any other 4xx is the request's fault and is answered at once. The output cap the gateway
/// chose may be lowered to what the context leaves (see [`super::context`]).
pub(super) async fn forward(gateway: &Gateway, prepared: &mut Prepared) -> ApiResult<Attempt> {
    let mut last = ApiError::BadGateway {
        code: ErrorCode::NoRoute,
        message: format!("no provider is configured for {}", prepared.model.id),
    };
    for route in prepared.model.routes.clone() {
        // A route the call may not take (not configured, or outside the call's residency) is never tried.
        if !super::served::route_allowed(gateway, prepared, &route.provider) {
            continue;
        }
        let Some(provider) = gateway.providers.get(&route.provider) else { continue };
        match try_route(gateway, prepared, provider, &route).await {
            Tried::Answered(result) => return result,
            Tried::Failed(error) => last = more_telling(last, error),
        }
    }
    Err(last)
}

/// How one route took a call.
enum Tried {
    /// What the caller gets: the provider's answer, or the request's own fault.
    Answered(ApiResult<Attempt>),
    /// A failure on the provider's side or on the way to it: the next route is tried.
    Failed(ApiError),
}

/// Sends the call to one route. A refusal for the context, when the gateway chose the output cap, is
/// answered once more with the cap the provider's count leaves (it billed nothing for the refusal); a cap
/// the client chose is the client's to lower.
async fn try_route(gateway: &Gateway, prepared: &mut Prepared, provider: &Provider, route: &Route) -> Tried {
    let mut refitted = false;
    loop {
        let time_left = prepared.upstream_time_left();
        if time_left.is_zero() {
            return Tried::Answered(Err(ApiError::GatewayTimeout {
                message: "the model provider did not answer in time".into(),
            }));
        }
        let response = match send(gateway, prepared, provider, route, time_left).await {
            Ok(response) => response,
            Err(e) if !never_sent(&e) => {
                tracing::error!(provider = %provider.name, timeout = e.is_timeout(), "the provider took the call but never answered; charged as its upper bound");
                let provider = provider.name.clone();
                return Tried::Answered(Ok(Attempt::Unreadable { provider, timed_out: e.is_timeout() }));
            }
            Err(e) => {
                tracing::warn!(provider = %provider.name, timeout = e.is_timeout(), "upstream unreachable; trying the next route");
                return Tried::Failed(transport_failure(
                    &e,
                    ErrorCode::UpstreamUnavailable,
                    "the model provider is unreachable",
                ));
            }
        };
        let status = response.status().as_u16();
        if is_provider_side_failure(status) {
            // An HTTP date in Retry-After is on the provider's wall clock, so it is read against ours.
            let wait = retry_after(response.headers(), chrono::Utc::now());
            tracing::warn!(provider = %provider.name, status, retry_after = ?wait, "upstream failed on its side; trying the next route");
            return Tried::Failed(provider_side_error(status, wait));
        }
        if status >= 400 {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let room = context_refusal(status, &body).and_then(ContextRefusal::room_for_output);
            match room {
                Some(room) if !refitted && prepared.client_cap.is_none() && room < prepared.max_tokens => {
                    tracing::info!(provider = %provider.name, cap = room, "output cap fitted to the context");
                    prepared.max_tokens = room;
                    refitted = true;
                    continue;
                }
                _ => return Tried::Answered(Err(request_error_from_upstream(status, &body, route, prepared))),
            }
        }
        return Tried::Answered(Ok(accepted(prepared, provider, status, response).await));
    }
}

/// Whether a failed request provably never reached the provider: no connection (refused, DNS, TLS, the
/// connect timeout), a request that could not be built, or one hyper gave back unsent. Anything else may
/// have been received, and may be billed.
fn never_sent(error: &reqwest::Error) -> bool {
    if error.is_connect() || error.is_builder() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled) {
            return true;
        }
        source = cause.source();
    }
    false
}

/// One request to a route, its whole answer bounded by the time left (a stream by the deadline alone).
async fn send(
    gateway: &Gateway,
    prepared: &Prepared,
    provider: &Provider,
    route: &Route,
    time_left: std::time::Duration,
) -> Result<reqwest::Response, reqwest::Error> {
    let url = format!("{}{}", provider.base_url.trim_end_matches('/'), prepared.endpoint.path());
    let mut request = gateway.http.post(&url).json(&prepared.upstream_body(route));
    request = request.timeout(if prepared.stream { time_left } else { time_left.min(gateway.answer_timeout) });
    if let Some(key) = &provider.api_key {
        request = request.bearer_auth(key.current().await.expose());
    }
    request.send().await
}

/// A 2xx: the stream to relay, or the whole answer read (unreadable if it is not a JSON object).
async fn accepted(prepared: &Prepared, provider: &Provider, status: u16, response: reqwest::Response) -> Attempt {
    if prepared.stream {
        return Attempt::Streaming { provider: provider.name.clone(), response };
    }
    let body = match response.bytes().await {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes).ok().filter(Value::is_object),
        Err(_) => None,
    };
    match body {
        Some(body) => Attempt::Complete { provider: provider.name.clone(), status, body },
        None => {
            tracing::error!(provider = %provider.name, status, "the provider accepted the call but its answer was unreadable");
            Attempt::Unreadable { provider: provider.name.clone(), timed_out: false }
        }
    }
}
