//! What the stand-in model generates for a request, as a model server would: text a word a token,
//! reasoning for reasoning models, tool calls whose arguments are JSON matching the tool's schema, and JSON
//! for JSON mode (`response_format` `json_object`) and structured output (`json_schema`). Every token is at
//! least one byte, as with any byte-level tokenizer, so an estimate from the bytes never falls below the
//! tokens billed.

use serde_json::{Map, Value, json};

use super::{FILLER, WORDS};

/// One generated choice: reasoning tokens (reasoning models), then content or a tool call.
pub(super) struct Generated {
    pub(super) reasoning: Vec<String>,
    pub(super) content: Vec<String>,
    pub(super) tool_call: Option<(String, Vec<String>)>,
}

/// `n` tokens of answer text, a word each.
fn text_of(tokens: u64) -> Vec<String> {
    (0..tokens).map(|i| WORDS.get(i as usize).map_or(FILLER, |w| *w).to_owned()).collect()
}

/// `tokens` tokens of a choice for `body` (`chat`: a chat completion; else a text completion).
pub(super) fn generate(body: &Value, tokens: u64, chat: bool) -> Generated {
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default();
    let reasons = chat && (model.contains("gpt-oss") || model.contains("qwen"));
    let reasoning_tokens = if reasons { tokens / 2 } else { 0 };
    let rest = tokens - reasoning_tokens;
    let reasoning = (0..reasoning_tokens).map(|_| "think ".to_owned()).collect();
    if chat && let Some(tool) = chosen_tool(body) {
        let name = tool.pointer("/function/name").and_then(Value::as_str).unwrap_or("tool").to_owned();
        let arguments = tool.pointer("/function/parameters").map_or_else(|| json!({}), |s| example(s, s, 0));
        // The name is one token; the arguments are the rest.
        let arguments = tokens_of(&arguments.to_string(), rest.saturating_sub(1));
        return Generated { reasoning, content: Vec::new(), tool_call: Some((name, arguments)) };
    }
    if chat && let Some(json) = structured_output(body) {
        return Generated { reasoning, content: tokens_of(&json.to_string(), rest), tool_call: None };
    }
    Generated { reasoning, content: text_of(rest), tool_call: None }
}

/// The tool the model calls: the one `tool_choice` names, else the first offered (none with `"none"`).
fn chosen_tool(body: &Value) -> Option<&Value> {
    let tools = body.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty())?;
    let choice = body.get("tool_choice");
    if choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    let named = choice.and_then(|c| c.pointer("/function/name")).and_then(Value::as_str);
    match named {
        Some(name) => tools.iter().find(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name)),
        None => tools.first(),
    }
}

/// The JSON a JSON-mode or structured-output request asks for, if it asks for any.
fn structured_output(body: &Value) -> Option<Value> {
    let format = body.get("response_format")?;
    match format.get("type").and_then(Value::as_str)? {
        "json_object" => Some(json!({ "answer": WORDS.concat().trim_end() })),
        "json_schema" => {
            let schema = format.pointer("/json_schema/schema")?;
            Some(example(schema, schema, 0))
        }
        _ => None,
    }
}

/// A value valid against `schema` (`root` resolves `#/$defs/...` and `#/definitions/...` references): every
/// property present, the first of an enum or of `anyOf`/`oneOf`, one item per array (or `minItems`).
fn example(schema: &Value, root: &Value, depth: u32) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        let pointer = target.trim_start_matches('#');
        return root.pointer(pointer).map_or(Value::Null, |s| example(s, root, depth + 1));
    }
    if let Some(value) = schema.get("const").or_else(|| schema.pointer("/enum/0")).or_else(|| schema.get("default")) {
        return value.clone();
    }
    if let Some(first) = ["anyOf", "oneOf", "allOf"].iter().find_map(|k| schema.pointer(&format!("/{k}/0"))) {
        return example(first, root, depth + 1);
    }
    let kind = match schema.get("type") {
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).find(|k| *k != "null"),
        Some(kind) => kind.as_str(),
        None if schema.get("properties").is_some() => Some("object"),
        None => None,
    };
    match kind {
        Some("object") => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let fields: Map<String, Value> = properties
                .into_iter()
                .flatten()
                .map(|(name, property)| (name.clone(), example(property, root, depth + 1)))
                .collect();
            Value::Object(fields)
        }
        Some("array") => {
            let items = schema.get("items").map_or(json!("stand-in"), |i| example(i, root, depth + 1));
            let count = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1).clamp(1, 8);
            Value::Array((0..count).map(|_| items.clone()).collect())
        }
        Some("integer") => json!(schema.get("minimum").and_then(Value::as_i64).unwrap_or(1)),
        Some("number") => json!(schema.get("minimum").and_then(Value::as_f64).unwrap_or(1.5)),
        Some("boolean") => json!(true),
        Some("null") => Value::Null,
        _ => json!("stand-in"),
    }
}

/// `text` as exactly `count` tokens of at least one byte each: split evenly, padded with spaces (valid JSON
/// whitespace) when it is shorter than that.
fn tokens_of(text: &str, count: u64) -> Vec<String> {
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count == 0 {
        return Vec::new();
    }
    let mut chars: Vec<char> = text.chars().collect();
    if chars.len() < count {
        chars.resize(count, ' ');
    }
    let (base, extra) = (chars.len() / count, chars.len() % count);
    let mut tokens = Vec::with_capacity(count);
    let mut at = 0;
    for i in 0..count {
        let size = base + usize::from(i < extra);
        tokens.push(chars[at..at + size].iter().collect());
        at += size;
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_arguments_are_json_matching_the_schema_in_as_many_tokens_as_billed() -> Result<(), serde_json::Error> {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": { "type": "string" },
                "unit": { "enum": ["celsius", "fahrenheit"] },
                "days": { "type": "integer", "minimum": 1 },
                "where": { "$ref": "#/$defs/Place" }
            },
            "required": ["city"],
            "$defs": { "Place": { "type": "object", "properties": { "lat": { "type": "number" } } } }
        });
        let body = json!({ "model": "llama-3.1-8b", "tools": [{ "type": "function", "function": { "name": "weather", "parameters": schema } }] });
        for tokens in [2, 7, 400] {
            let generated = generate(&body, tokens, true);
            let (name, arguments) = generated.tool_call.unwrap_or_default();
            assert_eq!(name, "weather");
            assert_eq!(arguments.len() as u64, tokens - 1);
            assert!(arguments.iter().all(|t| !t.is_empty()));
            let value: Value = serde_json::from_str(&arguments.concat())?;
            assert_eq!(value["unit"], "celsius");
            assert_eq!(value["days"], 1);
            assert!(value["city"].is_string() && value["where"]["lat"].is_number(), "{value}");
        }
        Ok(())
    }

    #[test]
    fn json_mode_and_schemas_answer_json() -> Result<(), serde_json::Error> {
        let object = json!({ "model": "m", "response_format": { "type": "json_object" } });
        let answer: Value = serde_json::from_str(&generate(&object, 6, true).content.concat())?;
        assert!(answer["answer"].is_string());
        let schema =
            json!({ "type": "object", "properties": { "names": { "type": "array", "items": { "type": "string" } } } });
        let structured = json!({ "model": "m", "response_format": { "type": "json_schema", "json_schema": { "name": "x", "schema": schema } } });
        let answer: Value = serde_json::from_str(&generate(&structured, 3, true).content.concat())?;
        assert_eq!(answer, json!({ "names": ["stand-in"] }));
        // Text completions and plain chat stay text.
        assert_eq!(generate(&json!({ "model": "m" }), 2, true).content.concat(), "Namaste! This ");
        Ok(())
    }
}
