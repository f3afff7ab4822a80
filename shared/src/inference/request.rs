//! A request as the client sent it, checked before anything is held: one choice, one prompt, a bounded
//! output, and an upper bound of its prompt's tokens.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::upstream::Usage;
use super::{Gateway, SETTLE_BUDGET, UPSTREAM_DEADLINE};
use crate::catalog::{Model, OUTPUT_CAP_PARAMS, Route};
use crate::error::{ApiError, ApiResult, ErrorCode};

/// Which OpenAI endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
}

impl Endpoint {
    pub(super) fn path(self) -> &'static str {
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
/// sent, and named as the client's), else the model's cap (named `None`, and fitted to the context later).
/// Never left to the provider's default (which may be the rest of the context).
fn requested_max_tokens(body: &Value, model: &Model) -> ApiResult<(u64, Option<&'static str>)> {
    let mut requested: Option<(&'static str, u64)> = None;
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
    Ok(requested.map_or((u64::from(model.max_output_tokens), None), |(param, n)| (n, Some(param))))
}

/// `n` and `best_of` may be absent, `null` or 1: one completion per request. More would multiply what the
/// provider generates; the gateway answers 400 rather than hold for many (see docs/api.md).
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
            return Err(ApiError::invalid(
                ErrorCode::InvalidType,
                "stream_options",
                "stream_options must be an object",
            ));
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
    /// The output cap written upstream (lowered to what the context leaves when the gateway chose it).
    pub max_tokens: u64,
    /// The parameter the client set the cap with, if it did.
    pub client_cap: Option<&'static str>,
    /// When the request arrived: every deadline of the call counts from here.
    pub arrived: Instant,
    /// What admission took from the key's and the account's spend windows (settled with the call).
    pub spend: crate::spend::SpendHold,
    /// The account's slot of calls in flight, if it has a limit (freed when the call ends).
    pub in_flight: Option<super::in_flight::InFlight>,
    /// Where the call may run (the key owner's residency, narrowed by the request): routes elsewhere are
    /// never tried.
    pub residency: crate::residency::DataResidency,
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
        Endpoint::ChatCompletions
            if body.get("messages").and_then(Value::as_array).is_some_and(|m| !m.iter().all(Value::is_object)) =>
        {
            return Err(ApiError::invalid(ErrorCode::InvalidType, "messages", "each message must be an object"));
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
    let (max_tokens, client_cap) = requested_max_tokens(&body, &model)?;
    Ok(Prepared {
        request_id,
        endpoint,
        prompt_bound: prompt_token_bound(&model, &body),
        max_tokens,
        client_cap,
        model,
        body,
        stream,
        client_wants_usage,
        arrived,
        spend: crate::spend::SpendHold::default(),
        in_flight: None,
        residency: crate::residency::DataResidency::Any,
    })
}

impl Prepared {
    /// The most this request can cost: the prompt's upper bound plus every token it may generate. The
    /// model's context is not relied on to lower it: a route may serve a longer context than the catalogue
    /// says, and would bill it.
    pub fn max_cost(&self) -> i64 {
        self.model.cost(self.prompt_bound, self.max_tokens)
    }

    /// What the provider could have billed at most: used when a call reached it but its usage is unknown.
    pub fn usage_upper_bound(&self) -> Usage {
        Usage { prompt_tokens: self.prompt_bound, completion_tokens: self.max_tokens, estimated: true }
    }

    /// Bytes of the stop sequences: text a server generates but holds back while it may be the start of
    /// one (vLLM keeps up to the longest stop string less a character), so never seen if the stream fails.
    pub(super) fn stop_bytes(&self) -> u64 {
        match self.body.get("stop") {
            Some(Value::String(stop)) => stop.len() as u64,
            Some(Value::Array(stops)) => stops.iter().filter_map(Value::as_str).map(|s| s.len() as u64).sum(),
            _ => 0,
        }
    }

    /// A key's tokens a minute bound the output cap the gateway chooses (never the caller's), so that a call
    /// without `max_tokens` fits the minute whenever its prompt's bound leaves room.
    pub fn fit_output_to(&mut self, tokens_per_minute: Option<u64>) {
        if let (Some(limit), None) = (tokens_per_minute, self.client_cap) {
            let room = limit.saturating_sub(self.prompt_bound);
            if (1..self.max_tokens).contains(&room) {
                self.max_tokens = room;
            }
        }
    }

    /// The field that holds the prompt.
    pub(super) fn prompt_param(&self) -> &'static str {
        match self.endpoint {
            Endpoint::ChatCompletions => "messages",
            Endpoint::Completions => "prompt",
        }
    }

    /// The request as the route receives it: the route's model name, the output cap that was held in every
    /// parameter the route honours (and no other cap), `stream` spelled out, and the usage chunk asked for.
    pub(super) fn upstream_body(&self, route: &Route) -> Value {
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
    pub(super) fn upstream_time_left(&self) -> Duration {
        UPSTREAM_DEADLINE.saturating_sub(self.arrived.elapsed())
    }

    /// When settlement stops retrying.
    pub(super) fn settle_deadline(&self) -> Instant {
        self.arrived + UPSTREAM_DEADLINE + SETTLE_BUDGET
    }
}
