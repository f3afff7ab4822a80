//! Tax invoices for a month of use (CGST Act s.31; Rules 46 and 47): issued by the jobs in the first days of
//! the next month (IST), well inside the 30 days Rule 47 allows after the supply. One per account with usage
//! in the month: a line per model (SAC, tokens, taxable value, tax), adjusted against the advances already
//! taxed on their receipt vouchers (`advances`), so no rupee is taxed twice. A business's invoice carries
//! its GSTIN (Rule 46(d)): the buyer claims input tax credit with it.
//!
//! The month's run (`wallet::invoicing`, over the wallets' registry) keeps its place, a heavy account's
//! usage read so far and the accounts held back in `invoice_run`, so a run that meets its budget hands on
//! to the next; each invoice's id follows from its account and month, so a repeated run issues none twice.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::{Map, json};

use super::documents::{DocumentKind, DocumentLine, Draft, Party, TaxDocument};
use super::tax::{SAC, TaxSplit, is_intra_state};
use crate::clock::IST_OFFSET;
use crate::config::Supplier;
use crate::error::{ApiError, ApiResult};
use crate::money::UNITS_PER_PAISA;
use crate::ports::Ports;
use crate::retention::ItemClass;

/// How long after a month ends its invoices wait: a call is logged when it settles, under the time it
/// started, and a call that started before midnight may settle after it (the sweeper settles stale holds
/// minutes later; a lease's calls are posted later still). Six hours leaves every one of them in.
pub const INVOICE_AFTER: chrono::Duration = chrono::Duration::hours(6);

/// A calendar month in India.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvoiceMonth {
    pub year: i32,
    pub month: u32,
}

impl InvoiceMonth {
    /// The month `at` falls in (IST).
    pub fn of(at: DateTime<Utc>) -> Self {
        let day = (at + IST_OFFSET).date_naive();
        Self { year: day.year(), month: day.month() }
    }

    /// The month before the one `now` falls in: the one the jobs invoice.
    pub fn previous(now: DateTime<Utc>) -> Self {
        let this = Self::of(now);
        if this.month == 1 { Self { year: this.year - 1, month: 12 } } else { Self { month: this.month - 1, ..this } }
    }

    fn next(self) -> Self {
        if self.month == 12 { Self { year: self.year + 1, month: 1 } } else { Self { month: self.month + 1, ..self } }
    }

    /// Its first moment: the 1st, 00:00 IST.
    pub fn starts(self) -> DateTime<Utc> {
        crate::clock::ist_midnight(NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or(NaiveDate::MIN))
    }

    /// The first moment of the next month.
    pub fn ends(self) -> DateTime<Utc> {
        self.next().starts()
    }

    /// "2026-11".
    pub fn id(self) -> String {
        format!("{}-{:02}", self.year, self.month)
    }
}

/// The invoice of an account's month: its id follows from both.
pub fn tax_invoice_id(user_id: &str, month: InvoiceMonth) -> String {
    format!("ti_{}_{}{:02}", user_id, month.year, month.month)
}

/// How much of an account's month one call reads: pages of `page` calls, at most `pages`, until `deadline`
/// (one page at least, so every run gets somewhere).
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub deadline: std::time::Instant,
    pub page: u32,
    pub pages: u32,
}

/// What became of an account's month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invoiced {
    Issued,
    /// Nothing used, or invoiced already.
    NoneDue,
    /// The deadline came before all of the month was read: what was read is kept for the next run.
    Unfinished,
}

/// The account's invoice for `month`, if it used anything then and has none yet.
pub async fn issue_invoice(ports: &Ports, user_id: &str, month: InvoiceMonth, reading: Reading) -> ApiResult<Invoiced> {
    let store = ports.store();
    let id = tax_invoice_id(user_id, month);
    if super::documents::get(store, &id).await?.is_some() {
        return Ok(Invoiced::NoneDue);
    }
    let mut tally = super::invoice_run::tally(ports, user_id, month).await?;
    for pages in 1.. {
        crate::usage::tally_page(store, user_id, (month.starts(), month.ends()), &mut tally, reading.page).await?;
        if tally.done {
            break;
        }
        if pages >= reading.pages || std::time::Instant::now() >= reading.deadline {
            super::invoice_run::save_tally(ports, user_id, month, &tally).await?;
            return Ok(Invoiced::Unfinished);
        }
    }
    let used: Vec<(String, u64, i64)> = tally
        .models
        .into_iter()
        .map(|(model, used)| (model, used.tokens, (used.cost.max(0) + UNITS_PER_PAISA / 2) / UNITS_PER_PAISA))
        .filter(|(_, _, paise)| *paise > 0)
        .collect();
    let issued = !used.is_empty() && write_invoice(ports, &MonthOfUse { user_id, month, used: &used }).await?;
    super::invoice_run::drop_tally(ports, user_id, month).await?;
    Ok(if issued { Invoiced::Issued } else { Invoiced::NoneDue })
}

/// Writes the invoice of a month of use, adjusted against the advances, and numbers it.
async fn write_invoice(ports: &Ports, of: &MonthOfUse<'_>) -> ApiResult<bool> {
    let store = ports.store();
    let user_id = of.user_id;
    let Some(recipient) = recipient_of(store, user_id).await? else {
        return Err(ApiError::Internal(format!(
            "{user_id} used the API with no billing profile or document to invoice"
        )));
    };
    let supplier = ports.config().supplier.as_ref().ok_or_else(no_supplier)?;
    let mut document = invoice(ports, supplier, of, recipient);
    let unadjusted = super::advances::unadjusted(store, user_id).await?;
    let adjusted = unadjusted.min(document.totals.taxable_paise);
    adjustment(&mut document, adjusted);
    super::advances::ensure(ports, user_id).await?;
    let expires_at = ports.config().retention.expiry(ItemClass::TaxDocument, document.created_at).unwrap_or(i64::MAX);
    let extra = vec![super::advances::taken(ports, user_id, adjusted)];
    let created = super::documents::create_or_found(store, &document, expires_at, extra).await?;
    super::numbering::number_queued(ports).await?;
    Ok(created)
}

fn no_supplier() -> ApiError {
    ApiError::Internal("no supplier is configured (INFEREX_SUPPLIER_*): tax invoices cannot be issued".into())
}

/// Whom the invoice goes to: the billing profile in force, or (an account closed since, whose profile went)
/// the recipient of its latest document.
async fn recipient_of(store: &dyn crate::store::ItemStore, user_id: &str) -> ApiResult<Option<Party>> {
    if let Some(profile) = crate::billing::profile(store, user_id).await? {
        return Ok(Some(Party::recipient(&profile)));
    }
    Ok(super::documents::latest_of(store, user_id).await?.map(|d| d.recipient))
}

/// An account's month, and what it used: per model, the tokens and the taxable value in paise.
struct MonthOfUse<'a> {
    user_id: &'a str,
    month: InvoiceMonth,
    used: &'a [(String, u64, i64)],
}

fn invoice(ports: &Ports, supplier: &Supplier, of: &MonthOfUse<'_>, recipient: Party) -> TaxDocument {
    let intra = is_intra_state(&supplier.state_code, &recipient.state_code);
    let lines: Vec<DocumentLine> = of
        .used
        .iter()
        .map(|(model, tokens, paise)| DocumentLine {
            description: format!("LLM inference API: {model}"),
            sac: SAC.into(),
            quantity: Some(i64::try_from(*tokens).unwrap_or(i64::MAX)),
            unit: Some("tokens".into()),
            tax: TaxSplit::on(*paise, intra),
        })
        .collect();
    let mut references = Map::new();
    references.insert("period".into(), json!(of.month.id()));
    let draft = Draft {
        id: tax_invoice_id(of.user_id, of.month),
        kind: DocumentKind::TaxInvoice,
        user_id: of.user_id.to_owned(),
        created_at: ports.clock().now(),
        recipient,
        lines,
        references,
    };
    TaxDocument::draft(supplier, draft)
}

/// The advances the supply is set against: how much, the tax already paid on them, and what is left to pay.
fn adjustment(document: &mut TaxDocument, adjusted: i64) {
    let paid_on_advances = TaxSplit::on(adjusted, document.is_intra_state()).tax_paise();
    let payable = (document.totals.tax_paise() - paid_on_advances).max(0);
    document.references.insert("advances_adjusted_paise".into(), json!(adjusted));
    document.references.insert("tax_paid_on_advances_paise".into(), json!(paid_on_advances));
    document.references.insert("tax_payable_paise".into(), json!(payable));
}
