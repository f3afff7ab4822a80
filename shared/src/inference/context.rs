//! A provider's refusal of a request that does not fit the model's context: its prompt and output cap
//! together need more tokens than the context holds. The provider counts the prompt with the model's own
//! tokenizer; our bound counts a token per byte (about four times too many), so the output cap the gateway
//! chooses is fitted to the provider's count rather than to the bound, which would refuse prompts that fit.

use crate::catalog::Model;
use crate::error::{ApiError, ErrorCode};

/// How context refusals begin (vLLM's, OpenAI's).
const REFUSAL_OPENINGS: [&str; 2] =
    ["This model's maximum context length is ", "'max_tokens' or 'max_completion_tokens' is too large: "];

/// What a context refusal says: the model's context and the prompt's tokens, both as the provider counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ContextRefusal {
    pub context: u64,
    pub prompt_tokens: u64,
}

impl ContextRefusal {
    /// Reads the refusal from a provider's error message, in the wordings vLLM and OpenAI-compatible servers
    /// use: "This model's maximum context length is 8192 tokens and your request has 6000 input tokens
    /// (4096 > 8192 - 6000)", "... However, you requested 8500 tokens (4404 in the messages, 4096 in the
    /// completion)", "... (8804 in your prompt; 0 for the completion)".
    /// Only a message that begins with one of those wordings counts: a server's other errors may quote the
    /// request's values, and a caller must not be able to choose the numbers.
    pub(super) fn read(message: &str) -> Option<Self> {
        if !REFUSAL_OPENINGS.iter().any(|opening| message.starts_with(opening)) {
            return None;
        }
        let context = number_after(message, "maximum context length is ")?;
        let prompt_tokens = number_before(message, " input tokens")
            .or_else(|| number_before(message, " in the messages"))
            .or_else(|| number_before(message, " in your prompt"))
            .or_else(|| number_after(message, "your messages resulted in "))?;
        Some(Self { context, prompt_tokens })
    }

    /// The largest output cap that fits after the prompt, if any does.
    pub(super) fn room_for_output(self) -> Option<u64> {
        self.context.checked_sub(self.prompt_tokens).filter(|room| *room > 0)
    }

    /// The caller's error: the prompt alone is too long (`prompt_param`), or with the output cap the caller
    /// chose (`cap_param`) it does not fit. Only counts are quoted, never the request.
    pub(super) fn error(self, model: &Model, prompt_param: &str, cap: Option<(&str, u64)>) -> ApiError {
        let (param, message) = match (self.room_for_output(), cap) {
            (Some(room), Some((cap_param, cap))) => (
                cap_param,
                format!(
                    "the prompt ({} tokens) and {cap_param} ({cap}) do not fit {}'s context of {} tokens: set \
                     {cap_param} to at most {room}",
                    self.prompt_tokens, model.id, self.context
                ),
            ),
            _ => (
                prompt_param,
                format!(
                    "the prompt is {} tokens, and {}'s context holds {} tokens with its answer: shorten the {prompt_param}",
                    self.prompt_tokens, model.id, self.context
                ),
            ),
        };
        ApiError::invalid(ErrorCode::ContextLengthExceeded, param, message)
    }
}

/// The integer right after `marker`.
fn number_after(text: &str, marker: &str) -> Option<u64> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The integer right before `marker` (scanned by bytes: the byte after the last non-digit always starts a
/// character, however wide the one before it).
fn number_before(text: &str, marker: &str) -> Option<u64> {
    let before = text.get(..text.find(marker)?)?;
    let start = before.bytes().rposition(|b| !b.is_ascii_digit()).map_or(0, |i| i + 1);
    before.get(start..)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_wordings_servers_use() {
        let vllm = "'max_tokens' or 'max_completion_tokens' is too large: 4096. This model's maximum context length \
                    is 8192 tokens and your request has 6000 input tokens (4096 > 8192 - 6000). None";
        assert_eq!(ContextRefusal::read(vllm), Some(ContextRefusal { context: 8192, prompt_tokens: 6000 }));
        let prompt_only = "This model's maximum context length is 1536 tokens. However, your request has 4176 input \
                           tokens. Please reduce the length of the input messages.";
        assert_eq!(ContextRefusal::read(prompt_only), Some(ContextRefusal { context: 1536, prompt_tokens: 4176 }));
        let openai = "This model's maximum context length is 4097 tokens. However, you requested 4128 tokens (2128 in \
                      the messages, 2000 in the completion). Please reduce the length of the messages or completion.";
        assert_eq!(ContextRefusal::read(openai), Some(ContextRefusal { context: 4097, prompt_tokens: 2128 }));
        let prompt = "This model's maximum context length is 8192 tokens, however you requested 8804 tokens (8804 in \
                      your prompt; 0 for the completion). Please reduce your prompt; or completion length.";
        assert_eq!(ContextRefusal::read(prompt), Some(ContextRefusal { context: 8192, prompt_tokens: 8804 }));
        let echoed = "1 validation error: temperature: input_value='This model's maximum context length is 9 tokens \
                      and your request has 1 input tokens'";
        let wide = "This model's maximum context length is 8192 tokens and your request has é6000 input tokens";
        assert_eq!(ContextRefusal::read(wide), Some(ContextRefusal { context: 8192, prompt_tokens: 6000 }));
        let no_digits = "This model's maximum context length is 8192 tokens and your request has é input tokens";
        for other in ["temperature must be at most 2", "maximum context length is many tokens", "", echoed, no_digits] {
            assert_eq!(ContextRefusal::read(other), None, "{other}");
        }
    }

    #[test]
    fn room_is_what_the_prompt_leaves() {
        assert_eq!(ContextRefusal { context: 8192, prompt_tokens: 6000 }.room_for_output(), Some(2192));
        assert_eq!(ContextRefusal { context: 8192, prompt_tokens: 8192 }.room_for_output(), None);
        assert_eq!(ContextRefusal { context: 8192, prompt_tokens: 9000 }.room_for_output(), None);
    }
}
