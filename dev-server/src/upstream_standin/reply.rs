//! One answer shaped as a whole body or as a stream of server-sent events, in the provider's wire format.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::generate::{Generated, generate};
use super::{Mode, Upstream, sse};

/// One answer, before it is shaped as a whole body or a stream of events.
pub(super) struct Reply {
    chat: bool,
    mode: Mode,
    model: Value,
    usage: Value,
    /// Choices returned (`n`).
    returned: u64,
    generated: Generated,
    finish_reason: &'static str,
    /// Log probabilities asked for, with this many alternatives per token (`logprobs`, `top_logprobs`).
    logprobs: Option<u64>,
}

/// What vLLM and OpenAI both send: one fingerprint per serving configuration.
const FINGERPRINT: &str = "fp_standin";

/// A chat token's log probability, with `top` alternatives (the token itself first).
fn token_logprob(token: &str, top: u64) -> Value {
    let alternatives: Vec<Value> = (0..top)
        .map(|i| {
            let alternative = if i == 0 { token.to_owned() } else { format!("{token}{i}") };
            json!({ "token": alternative, "logprob": -0.0625 * (i + 1) as f64, "bytes": alternative.as_bytes() })
        })
        .collect();
    json!({ "token": token, "logprob": -0.0625, "bytes": token.as_bytes(), "top_logprobs": alternatives })
}

/// The `logprobs` of a text completion's choice (the legacy shape: parallel lists).
fn completion_logprobs(tokens: &[String], top: u64) -> Value {
    let offsets: Vec<usize> = tokens.iter().scan(0, |at, t| Some(std::mem::replace(at, *at + t.len()))).collect();
    let tops: Vec<Value> = tokens
        .iter()
        .map(|t| Value::Object((0..top.max(1)).map(|i| (format!("{t}{i}"), json!(-0.0625 * (i + 1) as f64))).collect()))
        .collect();
    json!({ "tokens": tokens, "token_logprobs": tokens.iter().map(|_| -0.0625).collect::<Vec<_>>(), "top_logprobs": tops, "text_offset": offsets })
}

impl Reply {
    pub(super) fn new(upstream: &Upstream, body: &Value, chat: bool, mode: Mode) -> Self {
        let mut prompt_tokens = Upstream::prompt_tokens(body);
        if mode == Mode::OverReport {
            prompt_tokens *= super::OVER_REPORT_FACTOR;
        }
        let per_choice = upstream.tokens_per_choice(body);
        let completion_tokens = per_choice * Upstream::generated_choices(body);
        let mut usage = json!({ "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens });
        if mode == Mode::FloatUsage {
            usage["completion_tokens"] = json!(completion_tokens as f64);
            usage["total_tokens"] = json!((prompt_tokens + completion_tokens) as f64);
        }
        let generated = generate(body, per_choice, chat);
        let finish_reason = match (&generated.tool_call, per_choice == Upstream::output_cap(body)) {
            (Some(_), _) => "tool_calls",
            (None, true) => "length",
            (None, false) => "stop",
        };
        Self {
            chat,
            mode,
            model: body.get("model").cloned().unwrap_or(Value::Null),
            usage,
            returned: body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1),
            generated,
            finish_reason,
            logprobs: asked_logprobs(body, chat),
        }
    }

    fn chunk_object(&self) -> &'static str {
        if self.chat { "chat.completion.chunk" } else { "text_completion" }
    }

    /// The whole answer as one body.
    pub(super) fn complete(&self) -> Value {
        let (generated, finish_reason) = (&self.generated, self.finish_reason);
        let choices: Vec<Value> = (0..self.returned)
            .map(|index| {
                if !self.chat {
                    let logprobs = self.logprobs.map(|top| completion_logprobs(&generated.content, top));
                    return json!({ "index": index, "text": generated.content.concat(), "logprobs": logprobs, "finish_reason": finish_reason });
                }
                let mut message = json!({ "role": "assistant", "content": generated.content.concat() });
                if !generated.reasoning.is_empty() {
                    message["reasoning_content"] = json!(generated.reasoning.concat());
                }
                if let Some((name, arguments)) = &generated.tool_call {
                    message["content"] = Value::Null;
                    message["tool_calls"] = json!([{ "id": "call_standin", "type": "function", "function": { "name": name, "arguments": arguments.concat() } }]);
                }
                let logprobs = self.logprobs.map(|top| {
                    json!({ "content": generated.content.iter().map(|t| token_logprob(t, top)).collect::<Vec<_>>() })
                });
                json!({ "index": index, "message": message, "logprobs": logprobs, "finish_reason": finish_reason })
            })
            .collect();
        let object = if self.chat { "chat.completion" } else { "text_completion" };
        let mut answer = json!({ "id": "cmpl-standin", "object": object, "created": 1_795_600_000, "model": self.model, "system_fingerprint": FINGERPRINT, "choices": choices });
        if self.mode != Mode::NoUsage {
            answer["usage"] = self.usage.clone();
        }
        answer
    }

    fn chunk(&self, choice: Value) -> Value {
        json!({ "id": "cmpl-standin", "object": self.chunk_object(), "created": 1_795_600_000, "model": self.model, "system_fingerprint": FINGERPRINT, "choices": [choice] })
    }

    /// The deltas of one choice before its text: reasoning, then a tool call's name and arguments.
    fn leading_deltas(&self) -> Vec<Value> {
        let mut deltas: Vec<Value> =
            self.generated.reasoning.iter().map(|word| json!({ "reasoning_content": word })).collect();
        if let Some((name, arguments)) = &self.generated.tool_call {
            deltas.push(json!({ "tool_calls": [{ "index": 0, "id": "call_standin", "type": "function", "function": { "name": name, "arguments": "" } }] }));
            for word in arguments {
                deltas.push(json!({ "tool_calls": [{ "index": 0, "function": { "arguments": word } }] }));
            }
        }
        deltas
    }

    /// One chat chunk's choice; a content delta carries its token's log probability when asked.
    fn chat_choice(&self, index: u64, delta: Value) -> Value {
        let token = delta.get("content").and_then(Value::as_str).map(str::to_owned);
        let mut choice = json!({ "index": index, "delta": delta, "logprobs": null });
        if let (Some(top), Some(token)) = (self.logprobs, token) {
            choice["logprobs"] = json!({ "content": [token_logprob(&token, top)] });
        }
        choice
    }

    /// One text completion chunk's choice.
    fn text_choice(&self, index: u64, text: &str) -> Value {
        let logprobs = self.logprobs.map(|top| completion_logprobs(&[text.to_owned()], top));
        json!({ "index": index, "text": text, "logprobs": logprobs })
    }

    /// The answer as SSE events, shaped by the mode (cut, decoy usage, CRLF framing).
    fn events(&self, include_usage: bool) -> Vec<Bytes> {
        let (mode, chat) = (self.mode, self.chat);
        let mut events: Vec<Bytes> = Vec::new();
        let cut = matches!(mode, Mode::CutMidStream | Mode::DecoyUsageThenCut);
        if mode == Mode::DecoyUsageThenCut {
            events.push(sse(&json!({ "id": "cmpl-standin", "object": self.chunk_object(), "created": 1_795_600_000, "model": self.model, "choices": [], "usage": { "prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1 } })));
        }
        let deltas = self.leading_deltas();
        let mut sent_content = 0;
        for index in 0..self.returned {
            let choice_deltas =
                deltas.iter().cloned().chain(self.generated.content.iter().map(|w| json!({ "content": w })));
            for (position, mut delta) in choice_deltas.enumerate() {
                if cut && sent_content == 2 {
                    break;
                }
                sent_content += 1;
                let choice = if chat {
                    // The first delta of a choice says whose message it is, as every chat server sends it.
                    if position == 0 {
                        delta["role"] = json!("assistant");
                    }
                    self.chat_choice(index, delta)
                } else {
                    self.text_choice(index, delta.get("content").and_then(Value::as_str).unwrap_or_default())
                };
                events.push(sse(&self.chunk(choice)));
            }
        }
        if mode == Mode::ErrorMidStream {
            let error = json!({ "error": { "object": "error", "message": "CUDA error: an illegal memory access was encountered", "type": "InternalServerError", "param": null, "code": 500 } });
            events.push(sse(&error));
        } else if !cut {
            for index in 0..self.returned {
                let finish = if chat {
                    json!({ "index": index, "delta": {}, "finish_reason": self.finish_reason })
                } else {
                    json!({ "index": index, "text": "", "finish_reason": self.finish_reason })
                };
                events.push(sse(&self.chunk(finish)));
            }
            if include_usage && mode != Mode::NoUsage {
                events.push(sse(&json!({ "id": "cmpl-standin", "object": self.chunk_object(), "created": 1_795_600_000, "model": self.model, "choices": [], "usage": self.usage })));
            }
            events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        }
        if mode == Mode::CrlfFraming {
            events = events
                .into_iter()
                .map(|e| Bytes::from(String::from_utf8_lossy(&e).replace("\n\n", "\r\n\r\n")))
                .collect();
        }
        events
    }

    /// The events as a streamed response: as fast as the connection takes them (the slow mode leaves time
    /// to hang up); a cut stream ends with a transport error, as a dying upstream connection does.
    pub(super) fn streamed(&self, include_usage: bool) -> Response {
        let events = self.events(include_usage);
        let cut = matches!(self.mode, Mode::CutMidStream | Mode::DecoyUsageThenCut);
        let pause = (self.mode == Mode::SlowStream).then_some(Duration::from_millis(50));
        let stream = futures_util::stream::unfold((events.into_iter(), cut), move |(mut events, cut)| async move {
            match events.next() {
                Some(event) => {
                    match pause {
                        Some(pause) => tokio::time::sleep(pause).await,
                        None => tokio::task::yield_now().await,
                    }
                    Some((Ok::<_, std::io::Error>(event), (events, cut)))
                }
                None if cut => Some((Err(std::io::Error::other("connection reset")), (events, false))),
                None => None,
            }
        });
        let mut response = Response::new(Body::from_stream(stream));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        response
    }
}

/// The log probabilities a request asks for: chat's `logprobs: true` (with `top_logprobs` alternatives), or a
/// text completion's `logprobs: <alternatives>`.
fn asked_logprobs(body: &Value, chat: bool) -> Option<u64> {
    let asked = body.get("logprobs")?;
    if chat {
        asked.as_bool().filter(|on| *on).map(|_| body.get("top_logprobs").and_then(Value::as_u64).unwrap_or(0))
    } else {
        asked.as_u64()
    }
}
