//! The tax documents themselves: what each holds (the parties as they were when it was issued, its lines and
//! totals), how it is stored, and the account's list of them.
//!
//! Items: `TAXDOC#<id>` / `DOCUMENT`, the document; `USER#<id>` / `TAXDOC#<time>`, the account's list; and,
//! until numbered, `TAXDOCS#UNNUMBERED` / `<millis>#<id>` (`numbering`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::tax::TaxSplit;
use crate::accounts::{timestamp, user_pk};
use crate::config::Supplier;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::schema::{self, issued_documents_pk, prefix, tax_document_pk};
use crate::store::{Condition, Conditional, Item, ItemStore, Put, Query, SortKeyRange, StoreResult, Table, WriteOp};

pub(super) const DOCUMENT_SK: &str = schema::sk::DOCUMENT;

/// The document's entry in its account's list (`USER#<id>` / `TAXDOC#<created millis>#<document id>`).
pub(super) fn index_sk(document: &TaxDocument) -> String {
    format!("{}{:013}#{}", prefix::TAX_DOCUMENT, document.created_at.timestamp_millis().max(0), document.id)
}

/// The three documents GST asks of a prepaid service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    /// CGST Rule 50: for an advance received (a top-up), when it is received.
    ReceiptVoucher,
    /// CGST Rules 46 and 47: for the supply (a month of use), within 30 days of it.
    TaxInvoice,
    /// CGST Rule 51: for an advance given back without a supply (a closure refund).
    RefundVoucher,
}

impl DocumentKind {
    /// The document series (rule 46(b): consecutive, unique for a financial year).
    pub fn series(self) -> &'static str {
        match self {
            DocumentKind::ReceiptVoucher => "RV",
            DocumentKind::TaxInvoice => "TI",
            DocumentKind::RefundVoucher => "RF",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            DocumentKind::ReceiptVoucher => "Receipt Voucher",
            DocumentKind::TaxInvoice => "Tax Invoice",
            DocumentKind::RefundVoucher => "Refund Voucher",
        }
    }
}

/// A party as a document names it: the supplier (us) or the recipient (the billing profile then in force).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_name: Option<String>,
    pub address: String,
    pub state_code: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// A registered recipient's GSTIN (B2B); absent for a consumer (B2C).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gstin: Option<String>,
}

impl Party {
    pub fn supplier(supplier: &Supplier) -> Self {
        Self {
            name: supplier.legal_name.clone(),
            legal_name: None,
            address: supplier.address.clone(),
            state_code: supplier.state_code.clone(),
            state: crate::billing::state_name(&supplier.state_code).unwrap_or_default().to_owned(),
            pin: None,
            gstin: Some(supplier.gstin.clone()),
        }
    }

    pub fn recipient(profile: &crate::billing::BillingProfile) -> Self {
        Self {
            name: profile.billing_name.clone(),
            legal_name: profile.legal_name.clone(),
            address: profile.address.clone(),
            state_code: profile.state_code.clone(),
            state: crate::billing::state_name(&profile.state_code).unwrap_or_default().to_owned(),
            pin: Some(profile.pin.clone()),
            gstin: profile.gstin.clone(),
        }
    }
}

/// One line: a description, the SAC, a quantity where there is one (tokens), the taxable value and its tax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentLine {
    pub description: String,
    pub sac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(flatten)]
    pub tax: TaxSplit,
}

/// A tax document, as stored and as `GET /v1/tax-documents/{id}` answers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaxDocument {
    pub id: String,
    pub kind: DocumentKind,
    pub user_id: String,
    /// Given when numbered (`numbering`): `RV/2627/000001`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
    /// "2026-27".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub financial_year: Option<String>,
    pub created_at: DateTime<Utc>,
    pub supplier: Party,
    pub recipient: Party,
    /// The place of supply: the recipient's state, "29 - Karnataka".
    pub place_of_supply: String,
    /// Tax is never payable on reverse charge for this supply (rule 46(p)).
    pub reverse_charge: bool,
    pub lines: Vec<DocumentLine>,
    pub totals: TaxSplit,
    pub total_in_words: String,
    /// What the document is for: the payment and when it was received, the month invoiced, the refund.
    pub references: serde_json::Map<String, Value>,
    pub signatory: String,
}

/// What a new document says that its kind decides; the rest follows from the supplier and these.
pub struct Draft {
    pub id: String,
    pub kind: DocumentKind,
    pub user_id: String,
    /// Its date: when the money moved (a voucher), or when it is written (an invoice).
    pub created_at: DateTime<Utc>,
    pub recipient: Party,
    pub lines: Vec<DocumentLine>,
    pub references: serde_json::Map<String, Value>,
}

impl TaxDocument {
    /// A new document, not numbered yet: from us as configured now, to `draft.recipient` (whose state is the
    /// place of supply), its totals summed from its lines and written in words, never on reverse charge.
    pub fn draft(supplier: &Supplier, draft: Draft) -> Self {
        let totals = super::tax::TaxSplit::sum(draft.lines.iter().map(|l| &l.tax));
        Self {
            id: draft.id,
            kind: draft.kind,
            user_id: draft.user_id,
            number: None,
            issued_at: None,
            financial_year: None,
            created_at: draft.created_at,
            supplier: Party::supplier(supplier),
            place_of_supply: Self::place_of_supply_of(&draft.recipient),
            recipient: draft.recipient,
            reverse_charge: false,
            lines: draft.lines,
            totals,
            total_in_words: super::words::amount_in_words(totals.total_paise),
            references: draft.references,
            signatory: supplier.signatory.clone(),
        }
    }

    /// The place of supply as a document prints it.
    pub fn place_of_supply_of(recipient: &Party) -> String {
        format!("{} - {}", recipient.state_code, recipient.state)
    }

    pub fn is_numbered(&self) -> bool {
        self.number.is_some()
    }

    /// The date of issue as Indian documents and GST returns write it, in IST: `06-12-2026` (empty until
    /// numbered).
    pub fn date_of_issue(&self) -> String {
        self.issued_at.map(|t| (t + crate::clock::IST_OFFSET).format("%d-%m-%Y").to_string()).unwrap_or_default()
    }

    /// Whether the supply was within one state (CGST + SGST) rather than between two (IGST).
    pub fn is_intra_state(&self) -> bool {
        super::tax::is_intra_state(&self.supplier.state_code, &self.recipient.state_code)
    }
}

/// How `GET /v1/tax-documents` lists a document.
#[derive(Debug, Clone, Serialize)]
pub struct TaxDocumentSummary {
    pub id: String,
    pub kind: DocumentKind,
    pub number: String,
    pub issued_at: String,
    pub total_paise: i64,
    pub pdf_url: String,
    pub json_url: String,
}

impl TaxDocumentSummary {
    fn of(document: &TaxDocument) -> Option<Self> {
        Some(Self {
            id: document.id.clone(),
            kind: document.kind,
            number: document.number.clone()?,
            issued_at: timestamp(document.issued_at?),
            total_paise: document.totals.total_paise,
            pdf_url: format!("/v1/tax-documents/{}/pdf", document.id),
            json_url: format!("/v1/tax-documents/{}", document.id),
        })
    }
}

/// Writes a new document (unnumbered, queued for its number) with `extra` in the same transaction; `false`
/// when a document with its id exists already (each source gives one document: the id is derived from it).
pub(super) async fn create(
    store: &dyn ItemStore,
    document: &TaxDocument,
    expires_at: i64,
    extra: Vec<WriteOp>,
) -> StoreResult<bool> {
    let mut ops = vec![
        WriteOp::Put(Put {
            table: Table::Main,
            item: Item::from_record(tax_document_pk(&document.id), DOCUMENT_SK, document, Some(expires_at))?,
            condition: Condition::NotExists,
        }),
        WriteOp::Put(Put {
            table: Table::Main,
            item: Item::from_record(
                user_pk(&document.user_id),
                index_sk(document),
                &json!({ "document_id": document.id }),
                Some(expires_at),
            )?,
            condition: Condition::NotExists,
        }),
        super::numbering::queue_put(document, expires_at)?,
        // The month's list, for its GST return.
        WriteOp::Put(Put {
            table: Table::Main,
            item: Item::from_record(
                issued_documents_pk(&month_of(document.created_at)),
                format!("{:013}#{}", document.created_at.timestamp_millis().max(0), document.id),
                &json!({ "document_id": document.id }),
                Some(expires_at),
            )?,
            condition: Condition::NotExists,
        }),
    ];
    ops.extend(extra);
    Ok(store.transact(ops).await.applied()?.is_some())
}

/// [`create`], telling "written already" (`false`) from a condition of `extra` that failed meanwhile (the
/// advances moved under a concurrent document): that one is an error, for the caller to try again later,
/// so no document is taken for written when it is not.
pub(super) async fn create_or_found(
    store: &dyn ItemStore,
    document: &TaxDocument,
    expires_at: i64,
    extra: Vec<WriteOp>,
) -> ApiResult<bool> {
    if create(store, document, expires_at, extra).await? {
        return Ok(true);
    }
    match get(store, &document.id).await? {
        Some(_) => Ok(false),
        None => Err(ApiError::Unavailable(format!("tax document {} was not written: tried again later", document.id))),
    }
}

pub(super) async fn get(store: &dyn ItemStore, document_id: &str) -> StoreResult<Option<TaxDocument>> {
    store.get(Table::Main, &tax_document_pk(document_id), DOCUMENT_SK).await?.map(|i| i.record()).transpose()
}

/// Every document of the account, newest first (numbered or not).
pub async fn documents_of(store: &dyn ItemStore, user_id: &str) -> ApiResult<Vec<TaxDocument>> {
    let mut documents = Vec::new();
    for index in crate::store::user_items(store, user_id, prefix::TAX_DOCUMENT).await?.iter().rev() {
        let Some(id) = index.attrs.get("document_id").and_then(Value::as_str) else { continue };
        if let Some(document) = get(store, id).await?.filter(|d| d.user_id == user_id) {
            documents.push(document);
        }
    }
    Ok(documents)
}

/// The account's newest document (numbered or not), in one read of its index.
pub async fn latest_of(store: &dyn ItemStore, user_id: &str) -> ApiResult<Option<TaxDocument>> {
    let query = Query::new(Table::Main, user_pk(user_id))
        .range(SortKeyRange::Prefix(prefix::TAX_DOCUMENT.into()))
        .newest_first()
        .limit(1);
    let Some(index) = store.query(query).await?.items.pop() else { return Ok(None) };
    let Some(id) = index.attrs.get("document_id").and_then(Value::as_str) else { return Ok(None) };
    Ok(get(store, id).await?.filter(|d| d.user_id == user_id))
}

/// The sort key a `GET /v1/tax-documents` cursor goes on after (400 `invalid_cursor` for one we never gave).
pub fn list_cursor(cursor: Option<&str>) -> ApiResult<Option<String>> {
    crate::pages::decode_cursor(cursor, prefix::TAX_DOCUMENT)
}

/// `GET /v1/tax-documents`: a page of the account's issued (numbered) documents, newest first, and the sort
/// key to go on after when more may follow.
pub async fn list(
    store: &dyn ItemStore,
    user_id: &str,
    limit: u32,
    after: Option<String>,
) -> ApiResult<(Vec<TaxDocumentSummary>, Option<String>)> {
    let query = Query::new(Table::Main, user_pk(user_id))
        .range(SortKeyRange::Prefix(prefix::TAX_DOCUMENT.into()))
        .newest_first()
        .limit(limit)
        .after(after);
    let page = store.query(query).await?;
    let mut listed = Vec::new();
    for index in &page.items {
        let Some(id) = index.attrs.get("document_id").and_then(Value::as_str) else { continue };
        let document = get(store, id).await?.filter(|d| d.user_id == user_id);
        listed.extend(document.as_ref().and_then(TaxDocumentSummary::of));
    }
    Ok((listed, page.next))
}

/// One of the account's issued documents; another account's, or one not numbered yet, is not found.
pub async fn document_of(store: &dyn ItemStore, user_id: &str, document_id: &str) -> ApiResult<TaxDocument> {
    let found = get(store, document_id).await?.filter(|d| d.user_id == user_id && d.is_numbered());
    found.ok_or_else(|| ApiError::NotFound {
        code: ErrorCode::TaxDocumentNotFound,
        message: "no such tax document on this account".into(),
    })
}

/// "2026-11": the month (IST) a moment falls in.
fn month_of(at: DateTime<Utc>) -> String {
    (at + crate::clock::IST_OFFSET).format("%Y-%m").to_string()
}

/// Every document written in `month` ("2026-11") and numbered, for its GST return.
pub async fn issued_in(store: &dyn ItemStore, month: &str) -> ApiResult<Vec<TaxDocument>> {
    let query = Query::new(Table::Main, issued_documents_pk(month)).limit(500);
    let mut documents = Vec::new();
    for index in crate::store::all_pages(store, query).await? {
        let Some(id) = index.attrs.get("document_id").and_then(Value::as_str) else { continue };
        documents.extend(get(store, id).await?.filter(TaxDocument::is_numbered));
    }
    Ok(documents)
}

/// The documents as the data export holds them (each one whole).
pub async fn export_for(store: &dyn ItemStore, user_id: &str) -> ApiResult<Value> {
    let documents: Vec<TaxDocument> =
        documents_of(store, user_id).await?.into_iter().filter(TaxDocument::is_numbered).collect();
    Ok(json!(documents))
}
