//! The account's GST documents (`shared::gst`): the list, each as JSON, and each as PDF.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};
use serde::Deserialize;
use shared::auth::Session;
use shared::error::ApiResult;
use shared::gst::{TaxDocument, TaxDocumentSummary, documents, pdf};
use shared::http::{ListPage, QueryParams, page_limit};
use shared::state::AppState;

const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tax-documents", get(list))
        .route("/v1/tax-documents/{document_id}", get(as_json))
        .route("/v1/tax-documents/{document_id}/pdf", get(as_pdf))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /v1/tax-documents`: receipt vouchers, tax invoices and refund vouchers, newest first.
async fn list(
    State(state): State<AppState>,
    session: Session,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<ListPage<TaxDocumentSummary>>> {
    let limit = page_limit(query.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let after = documents::list_cursor(query.cursor.as_deref())?;
    let (listed, next) = documents::list(state.store(), &session.user_id, limit, after).await?;
    Ok(Json(ListPage::page(listed, next.as_deref())))
}

async fn as_json(
    State(state): State<AppState>,
    session: Session,
    Path(document_id): Path<String>,
) -> ApiResult<Json<TaxDocument>> {
    Ok(Json(documents::document_of(state.store(), &session.user_id, &document_id).await?))
}

async fn as_pdf(
    State(state): State<AppState>,
    session: Session,
    Path(document_id): Path<String>,
) -> ApiResult<Response> {
    let document = documents::document_of(state.store(), &session.user_id, &document_id).await?;
    let file_name = document.number.as_deref().unwrap_or(&document.id).replace('/', "-");
    let disposition = format!("attachment; filename=\"{file_name}.pdf\"");
    Ok((
        [(header::CONTENT_TYPE, "application/pdf".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        pdf::render(&document),
    )
        .into_response())
}
