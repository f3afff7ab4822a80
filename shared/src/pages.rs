//! Paged lists: the `limit` parameter and the opaque cursors (the last sort key seen, base64url-encoded). Each
//! owner of a listed item checks a cursor against its own sort-key prefix, so a cursor of one list never
//! reads another's items.

use crate::error::{ApiError, ErrorCode};

/// A list's `limit` query parameter: `default` when absent, else 1 to `max` or a 400 naming `limit`.
pub fn page_limit(requested: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = requested.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid(ErrorCode::InvalidLimit, "limit", format!("limit must be between 1 and {max}")));
    }
    Ok(limit)
}

/// Page cursors are opaque to clients: the last sort key seen, base64url-encoded.
pub fn encode_cursor(sort_key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sort_key)
}

/// Decodes a cursor this API returned for sort keys starting with `prefix`; 400 `invalid_cursor` otherwise.
pub fn decode_cursor(cursor: Option<&str>, prefix: &str) -> Result<Option<String>, ApiError> {
    use base64::Engine;
    // An empty `cursor=` is no cursor: the first page.
    let Some(cursor) = cursor.filter(|c| !c.is_empty()) else { return Ok(None) };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|sort_key| sort_key.starts_with(prefix))
        .map(Some)
        .ok_or_else(|| ApiError::invalid(ErrorCode::InvalidCursor, "cursor", "cursor is not one this API returned"))
}
