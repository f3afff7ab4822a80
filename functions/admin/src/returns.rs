//! The accountant's files (operators): a month's GSTR-1 as the portal's JSON and as the offline tool's CSV
//! sheets (`shared::gst::returns`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shared::error::{ApiError, ApiResult};
use shared::gst::returns::{month_documents, period};
use shared::http::Operator;
use shared::state::AppState;

fn supplier_gstin(state: &AppState) -> ApiResult<String> {
    let supplier = state.config.supplier.as_ref();
    supplier.map(|s| s.gstin.clone()).ok_or_else(|| ApiError::Internal("no supplier is configured".into()))
}

pub(crate) async fn as_json(
    State(state): State<AppState>,
    _: Operator,
    Path(month): Path<String>,
) -> ApiResult<Json<Value>> {
    let documents = month_documents(&state.ports, period(&month)?).await?;
    Ok(Json(documents.gstr1_json(&supplier_gstin(&state)?)))
}

pub(crate) async fn as_csv(
    State(state): State<AppState>,
    _: Operator,
    Path((month, section)): Path<(String, String)>,
) -> ApiResult<Response> {
    let month = period(&month)?;
    let documents = month_documents(&state.ports, month).await?;
    let text = documents.csv(&section)?;
    let disposition = format!("attachment; filename=\"gstr1-{}-{section}.csv\"", month.id());
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        text,
    )
        .into_response())
}
