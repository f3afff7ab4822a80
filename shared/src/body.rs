//! Request bodies: a JSON object into a typed value, with serde's errors turned into our 400s that name the
//! field and never repeat what was sent. Below the HTTP layer, so domain modules that parse payloads
//! (Razorpay webhooks) need not know about HTTP.

use crate::error::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A PATCH body's fields: an object holding only the `editable` fields (one it does not know is a 400
/// naming it, never ignored: a setting a client believes it made must not silently be absent) and at least
/// one of them. `what` completes "<field> is not ...".
pub fn editable_fields<'a>(
    body: &'a serde_json::Value,
    editable: &[&str],
    what: &str,
) -> Result<&'a serde_json::Map<String, serde_json::Value>, ApiError> {
    let fields = body.as_object().ok_or_else(|| ApiError::InvalidRequest {
        code: ErrorCode::InvalidJson,
        message: "request body must be a JSON object".into(),
        param: None,
    })?;
    if let Some(unknown) = fields.keys().find(|k| !editable.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            ErrorCode::UnknownField,
            unknown,
            format!("{unknown} is not {what}; editable: {}", editable.join(", ")),
        ));
    }
    if fields.is_empty() {
        let first = editable.first().copied().unwrap_or_default();
        return Err(ApiError::invalid(ErrorCode::NothingToChange, first, format!("send {}", editable.join(" or "))));
    }
    Ok(fields)
}

/// Deserialises a body, turning serde's errors into our 400s with the offending field named.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every request body is an object; serde would otherwise accept an array as a struct's fields in order.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::InvalidRequest {
            code: ErrorCode::InvalidJson,
            message: "request body must be a JSON object".into(),
            param: None,
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let detail = redact_values(&strip_position(&inner.to_string()));
        match inner.classify() {
            serde_json::error::Category::Data => {
                // serde reports a missing field at the enclosing object's path, naming it in the message.
                let missing =
                    detail.strip_prefix("missing field `").and_then(|rest| rest.split('`').next()).map(str::to_owned);
                let param = match (missing, path.as_str()) {
                    (Some(field), ".") => field,
                    (Some(field), parent) => format!("{parent}.{field}"),
                    (None, p) => p.to_owned(),
                };
                let code =
                    if detail.starts_with("missing field") { ErrorCode::MissingField } else { ErrorCode::InvalidType };
                ApiError::InvalidRequest { code, message: format!("{param}: {detail}"), param: Some(param) }
            }
            _ => ApiError::InvalidRequest {
                code: ErrorCode::InvalidJson,
                message: format!("request body is not valid JSON: {detail}"),
                param: None,
            },
        }
    })
}

/// serde quotes the offending value ("invalid type: integer `234123412346`, expected a string"); an answer
/// never repeats what was sent (it may be a KYC number or a secret typed into the wrong field), so only the
/// value's kind stays.
fn redact_values(detail: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "unknown variant "] {
        if let Some(rest) = detail.strip_prefix(prefix) {
            let (head, tail) = rest.split_once(", expected").unwrap_or((rest, ""));
            let kind = head.split(['`', '"', '\'']).next().unwrap_or_default().trim();
            let expected = if tail.is_empty() { String::new() } else { format!(", expected{tail}") };
            return format!("{}{}{kind}{expected}", prefix.trim_end(), if kind.is_empty() { "" } else { " " });
        }
    }
    detail.to_owned()
}

/// serde_json appends " at line L column C"; the field name says more to an API user.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[expect(dead_code, reason = "only deserialised")]
    struct Kyc {
        aadhaar: String,
        mode: Option<Mode>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Auto,
    }

    #[test]
    fn type_errors_name_the_field_but_never_repeat_the_value() -> Result<(), String> {
        for (body, kind) in [
            (r#"{"aadhaar": 234123412346}"#, "integer"),
            (r#"{"aadhaar": 2341234123.46}"#, "floating point"),
            (r#"{"aadhaar": ["234123412346"]}"#, "sequence"),
            (r#"{"aadhaar": "x", "mode": "ABCPE1234F"}"#, "unknown variant"),
        ] {
            let Err(ApiError::InvalidRequest { message, param, .. }) = parse_json::<Kyc>(body.as_bytes()) else {
                return Err(format!("{body} was accepted"));
            };
            assert!(message.contains(kind), "{message}");
            assert!(param.is_some(), "{message}");
            for secret in ["234123412346", "2341234123", "ABCPE1234F"] {
                assert!(!message.contains(secret), "{message}");
            }
        }
        Ok(())
    }
}
