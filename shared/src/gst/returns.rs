//! GSTR-1 for a month, ready for the accountant: the month's documents in the GST portal's JSON layout and
//! as the offline tool's CSV sheets (`GET /v1/admin/gstr1/{period}`), read from the month's index of issued
//! documents (`documents::month_index`), so every figure is a sum of documents an operator can open.
//!
//! The sections (Form GSTR-1, CGST Rule 59):
//! - `b2b` (Table 4A): tax invoices to registered buyers, one entry per GSTIN, each invoice with its value,
//!   place of supply and one item at 18%.
//! - `b2cl` (Table 5): inter-state tax invoices to consumers above ₹1,00,000 each, invoice by invoice, by
//!   place of supply (CGST Rule 59(4)(a)(ii), its threshold lowered from ₹2,50,000 from 1 August 2024 by
//!   Notification 12/2024-Central Tax).
//! - `b2cs` (Table 7): the other tax invoices to consumers, summed by place of supply and intra/inter-state.
//! - `at` (Table 11A): advances received in the month (receipt vouchers), by place of supply.
//! - `txpd` (Table 11B): advances adjusted against the month's invoices, and advances refunded (refund
//!   vouchers), by place of supply: both take tax paid on an advance back out of the advances reported.
//! - `hsn` (Table 12): the SAC summary, split B2B and B2C as the portal asks from May 2025.
//! - `doc_issue` (Table 13): the number ranges of invoices (1), receipt vouchers (6) and refund vouchers (8).
//!
//! Amounts are rupees with two decimals, as the portal takes them, written from whole paise.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::documents::{DocumentKind, TaxDocument};
use super::invoices::InvoiceMonth;
use super::tax::{GST_RATE_PERCENT, SAC, TaxSplit};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::money::format_paise as rupees;
use crate::ports::Ports;

/// Inter-state invoices to consumers of more than this (₹1,00,000, in paise) are reported one by one (`b2cl`).
const B2CL_ABOVE_PAISE: i64 = 100_000 * 100;

/// Whether a consumer's invoice goes in `b2cl` rather than `b2cs`.
fn is_b2cl(invoice: &TaxDocument) -> bool {
    !invoice.is_intra_state() && invoice.totals.total_paise > B2CL_ABOVE_PAISE
}

/// A month's documents, sorted by number.
pub struct MonthOfDocuments {
    pub month: InvoiceMonth,
    pub documents: Vec<TaxDocument>,
}

/// `2026-11` as a period (400 `invalid_period` otherwise).
pub fn period(raw: &str) -> ApiResult<InvoiceMonth> {
    let invalid = || ApiError::invalid(ErrorCode::InvalidPeriod, "period", "period must be a month, YYYY-MM");
    let (year, month) = raw.split_once('-').ok_or_else(invalid)?;
    let (year, month): (i32, u32) = (year.parse().map_err(|_| invalid())?, month.parse().map_err(|_| invalid())?);
    if raw.len() != 7 || !(2000..=9999).contains(&year) || !(1..=12).contains(&month) {
        return Err(invalid());
    }
    Ok(InvoiceMonth { year, month })
}

/// The month's issued documents.
pub async fn month_documents(ports: &Ports, month: InvoiceMonth) -> ApiResult<MonthOfDocuments> {
    let mut documents = super::documents::issued_in(ports.store(), &month.id()).await?;
    documents.sort_by(|a, b| a.number.cmp(&b.number));
    Ok(MonthOfDocuments { month, documents })
}

fn money(paise: i64) -> Value {
    // Two decimals, from whole paise: the portal's number format.
    serde_json::from_str(&rupees(paise)).unwrap_or(Value::Null)
}

fn supply_type(intra_state: bool) -> &'static str {
    if intra_state { "INTRA" } else { "INTER" }
}

/// A document's place of supply, whether within the supplier's state, and an amount of it.
fn placed(document: &TaxDocument, tax: TaxSplit) -> (String, bool, TaxSplit) {
    (document.recipient.state_code.clone(), document.is_intra_state(), tax)
}

fn taxes(tax: &TaxSplit) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    map.insert("iamt".into(), money(tax.igst_paise));
    map.insert("camt".into(), money(tax.cgst_paise));
    map.insert("samt".into(), money(tax.sgst_paise));
    map.insert("csamt".into(), money(0));
    map
}

impl MonthOfDocuments {
    fn of_kind(&self, kind: DocumentKind) -> impl Iterator<Item = &TaxDocument> {
        self.documents.iter().filter(move |d| d.kind == kind)
    }

    fn invoices(&self, registered: bool) -> impl Iterator<Item = &TaxDocument> {
        self.of_kind(DocumentKind::TaxInvoice).filter(move |d| d.recipient.gstin.is_some() == registered)
    }

    /// The portal's JSON.
    pub fn gstr1_json(&self, supplier_gstin: &str) -> Value {
        json!({
            "gstin": supplier_gstin,
            "fp": format!("{:02}{}", self.month.month, self.month.year),
            "b2b": self.b2b(),
            "b2cl": self.b2cl(),
            "b2cs": self.b2cs().iter().map(|((pos, sply), t)| {
                let mut row = taxes(t);
                row.insert("sply_ty".into(), json!(sply));
                row.insert("pos".into(), json!(pos));
                row.insert("typ".into(), json!("OE"));
                row.insert("rt".into(), json!(GST_RATE_PERCENT));
                row.insert("txval".into(), money(t.taxable_paise));
                Value::Object(row)
            }).collect::<Vec<_>>(),
            "at": advances_json(&self.received()),
            "txpd": advances_json(&self.adjusted_and_refunded()),
            "hsn": {
                "hsn_b2b": self.sac_summary(true).iter().map(hsn_row).collect::<Vec<_>>(),
                "hsn_b2c": self.sac_summary(false).iter().map(hsn_row).collect::<Vec<_>>(),
            },
            "doc_issue": { "doc_det": self.doc_issue() },
        })
    }

    fn b2b(&self) -> Vec<Value> {
        let mut by_buyer: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for invoice in self.invoices(true) {
            let mut item = taxes(&invoice.totals);
            item.insert("txval".into(), money(invoice.totals.taxable_paise));
            item.insert("rt".into(), json!(GST_RATE_PERCENT));
            by_buyer.entry(invoice.recipient.gstin.clone().unwrap_or_default()).or_default().push(json!({
                "inum": invoice.number,
                "idt": invoice.date_of_issue(),
                "val": money(invoice.totals.total_paise),
                "pos": invoice.recipient.state_code,
                "rchrg": "N",
                "inv_typ": "R",
                "itms": [{ "num": 1, "itm_det": item }],
            }));
        }
        by_buyer.into_iter().map(|(ctin, inv)| json!({ "ctin": ctin, "inv": inv })).collect()
    }

    /// Large inter-state invoices to consumers, by place of supply.
    fn b2cl(&self) -> Vec<Value> {
        let mut by_place: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for invoice in self.invoices(false).filter(|d| is_b2cl(d)) {
            let mut item = serde_json::Map::new();
            item.insert("rt".into(), json!(GST_RATE_PERCENT));
            item.insert("txval".into(), money(invoice.totals.taxable_paise));
            item.insert("iamt".into(), money(invoice.totals.igst_paise));
            item.insert("csamt".into(), money(0));
            by_place.entry(invoice.recipient.state_code.clone()).or_default().push(json!({
                "inum": invoice.number,
                "idt": invoice.date_of_issue(),
                "val": money(invoice.totals.total_paise),
                "itms": [{ "num": 1, "itm_det": item }],
            }));
        }
        by_place.into_iter().map(|(pos, inv)| json!({ "pos": pos, "inv": inv })).collect()
    }

    /// The other consumers' invoices summed by (place of supply, INTRA/INTER).
    fn b2cs(&self) -> BTreeMap<(String, &'static str), TaxSplit> {
        sum_by_place(self.invoices(false).filter(|d| !is_b2cl(d)).map(|d| placed(d, d.totals)))
    }

    /// Advances received: the month's receipt vouchers.
    fn received(&self) -> BTreeMap<(String, &'static str), TaxSplit> {
        sum_by_place(self.of_kind(DocumentKind::ReceiptVoucher).map(|d| placed(d, d.totals)))
    }

    /// Advances taken back out: set against the month's invoices, or refunded.
    fn adjusted_and_refunded(&self) -> BTreeMap<(String, &'static str), TaxSplit> {
        let adjusted = self.of_kind(DocumentKind::TaxInvoice).map(|d| {
            let paise = d.references.get("advances_adjusted_paise").and_then(Value::as_i64).unwrap_or(0);
            placed(d, TaxSplit::on(paise, d.is_intra_state()))
        });
        let refunded = self.of_kind(DocumentKind::RefundVoucher).map(|d| placed(d, d.totals));
        sum_by_place(adjusted.chain(refunded).filter(|(_, _, t)| t.taxable_paise > 0))
    }

    /// The SAC summary of invoices to registered buyers (`b2b`) or to consumers: one row, or none in a month
    /// without such invoices.
    fn sac_summary(&self, b2b: bool) -> Option<TaxSplit> {
        let totals = TaxSplit::sum(self.invoices(b2b).map(|d| &d.totals));
        (totals.taxable_paise != 0).then_some(totals)
    }

    /// Table 13: each kind's first and last number of the month, and how many.
    fn doc_issue(&self) -> Vec<Value> {
        let kinds =
            [(1, DocumentKind::TaxInvoice), (6, DocumentKind::ReceiptVoucher), (8, DocumentKind::RefundVoucher)];
        kinds
            .into_iter()
            .filter_map(|(code, kind)| {
                let numbers: Vec<&str> = self.of_kind(kind).filter_map(|d| d.number.as_deref()).collect();
                let (from, to) = (numbers.first()?, numbers.last()?);
                let total = numbers.len();
                Some(json!({ "doc_num": code, "docs": [{ "num": 1, "from": from, "to": to, "totnum": total, "cancel": 0, "net_issue": total }] }))
            })
            .collect()
    }

    /// The offline tool's CSV sheets: `b2b`, `b2cl`, `b2cs`, `at`, `atadj`, `hsn`, `docs`.
    pub fn csv(&self, section: &str) -> ApiResult<String> {
        let rows: Vec<Vec<String>> = match section {
            "b2b" => self.invoices(true).map(b2b_row).collect(),
            "b2cl" => self.invoices(false).filter(|d| is_b2cl(d)).map(b2cl_row).collect(),
            "b2cs" => self
                .b2cs()
                .iter()
                .map(|((pos, _), t)| {
                    vec![
                        "OE".into(),
                        pos.clone(),
                        String::new(),
                        rate(),
                        rupees(t.taxable_paise),
                        rupees(0),
                        String::new(),
                    ]
                })
                .collect(),
            "at" => self.received().iter().map(|((pos, _), t)| advance_row(pos, t)).collect(),
            "atadj" => self.adjusted_and_refunded().iter().map(|((pos, _), t)| advance_row(pos, t)).collect(),
            "hsn" => [true, false].iter().flat_map(|b2b| self.sac_summary(*b2b)).map(|t| hsn_csv_row(&t)).collect(),
            "docs" => self.doc_issue().iter().map(docs_row).collect(),
            _ => {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidParameter,
                    "section",
                    "section must be one of b2b, b2cl, b2cs, at, atadj, hsn, docs",
                ));
            }
        };
        let header = CSV_HEADERS.iter().find(|(name, _)| *name == section).map(|(_, h)| *h).unwrap_or_default();
        let mut text = format!("{header}\n");
        for row in rows {
            text.push_str(&row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
            text.push('\n');
        }
        Ok(text)
    }
}

/// The offline tool's column headers, sheet by sheet.
const CSV_HEADERS: [(&str, &str); 7] = [
    (
        "b2b",
        "GSTIN/UIN of Recipient,Receiver Name,Invoice Number,Invoice date,Invoice Value,Place Of Supply,Reverse Charge,Applicable % of Tax Rate,Invoice Type,E-Commerce GSTIN,Rate,Taxable Value,Cess Amount",
    ),
    (
        "b2cl",
        "Invoice Number,Invoice date,Invoice Value,Place Of Supply,Applicable % of Tax Rate,Rate,Taxable Value,Cess Amount,E-Commerce GSTIN",
    ),
    ("b2cs", "Type,Place Of Supply,Applicable % of Tax Rate,Rate,Taxable Value,Cess Amount,E-Commerce GSTIN"),
    ("at", "Place Of Supply,Applicable % of Tax Rate,Rate,Gross Advance Received,Cess Amount"),
    ("atadj", "Place Of Supply,Applicable % of Tax Rate,Rate,Gross Advance Adjusted,Cess Amount"),
    (
        "hsn",
        "HSN,Description,UQC,Total Quantity,Total Value,Rate,Taxable Value,Integrated Tax Amount,Central Tax Amount,State/UT Tax Amount,Cess Amount",
    ),
    ("docs", "Nature of Document,Sr. No. From,Sr. No. To,Total Number,Cancelled"),
];

fn rate() -> String {
    format!("{GST_RATE_PERCENT}.00")
}

fn place(code: &str) -> String {
    format!("{code}-{}", crate::billing::state_name(code).unwrap_or_default())
}

fn b2b_row(invoice: &TaxDocument) -> Vec<String> {
    let buyer = invoice.recipient.legal_name.clone().unwrap_or(invoice.recipient.name.clone());
    vec![
        invoice.recipient.gstin.clone().unwrap_or_default(),
        buyer,
        invoice.number.clone().unwrap_or_default(),
        invoice.date_of_issue(),
        rupees(invoice.totals.total_paise),
        place(&invoice.recipient.state_code),
        "N".into(),
        String::new(),
        "Regular B2B".into(),
        String::new(),
        rate(),
        rupees(invoice.totals.taxable_paise),
        rupees(0),
    ]
}

fn b2cl_row(invoice: &TaxDocument) -> Vec<String> {
    vec![
        invoice.number.clone().unwrap_or_default(),
        invoice.date_of_issue(),
        rupees(invoice.totals.total_paise),
        place(&invoice.recipient.state_code),
        String::new(),
        rate(),
        rupees(invoice.totals.taxable_paise),
        rupees(0),
        String::new(),
    ]
}

fn advance_row(pos: &str, tax: &TaxSplit) -> Vec<String> {
    vec![place(pos), String::new(), rate(), rupees(tax.taxable_paise), rupees(0)]
}

fn hsn_csv_row(tax: &TaxSplit) -> Vec<String> {
    vec![
        SAC.into(),
        HSN_DESCRIPTION.into(),
        "NA".into(),
        "0".into(),
        rupees(tax.total_paise),
        rate(),
        rupees(tax.taxable_paise),
        rupees(tax.igst_paise),
        rupees(tax.cgst_paise),
        rupees(tax.sgst_paise),
        rupees(0),
    ]
}

fn docs_row(entry: &Value) -> Vec<String> {
    let nature = match entry["doc_num"].as_i64() {
        Some(1) => "Invoices for outward supply",
        Some(6) => "Receipt voucher",
        _ => "Refund voucher",
    };
    let docs = &entry["docs"][0];
    let text = |name: &str| docs[name].as_str().map_or(docs[name].to_string(), str::to_owned);
    vec![nature.into(), text("from"), text("to"), text("totnum"), text("cancel")]
}

/// A field as CSV writes it: quoted when it holds a comma, a quote or a line break.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// The SAC's description as the HSN summary prints it (at most 30 characters).
const HSN_DESCRIPTION: &str = "Hosting and IT infrastructure";

fn hsn_row(tax: &TaxSplit) -> Value {
    let mut row = taxes(tax);
    row.insert("num".into(), json!(1));
    row.insert("hsn_sc".into(), json!(SAC));
    row.insert("desc".into(), json!(HSN_DESCRIPTION));
    row.insert("uqc".into(), json!("NA"));
    row.insert("qty".into(), json!(0));
    row.insert("rt".into(), json!(GST_RATE_PERCENT));
    row.insert("txval".into(), money(tax.taxable_paise));
    Value::Object(row)
}

fn sum_by_place(rows: impl Iterator<Item = (String, bool, TaxSplit)>) -> BTreeMap<(String, &'static str), TaxSplit> {
    let mut sums: BTreeMap<(String, &'static str), TaxSplit> = BTreeMap::new();
    for (pos, intra_state, tax) in rows {
        let entry = sums.entry((pos, supply_type(intra_state))).or_insert(TaxSplit::on(0, intra_state));
        *entry = TaxSplit::sum([&*entry, &tax]);
    }
    sums
}

fn advances_json(sums: &BTreeMap<(String, &'static str), TaxSplit>) -> Vec<Value> {
    sums.iter()
        .map(|((pos, sply), t)| {
            let mut item = taxes(t);
            item.insert("rt".into(), json!(GST_RATE_PERCENT));
            item.insert("ad_amt".into(), money(t.taxable_paise));
            json!({ "pos": pos, "sply_ty": sply, "itms": [item] })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Supplier;
    use crate::gst::documents::{DocumentLine, Draft, Party};

    /// A numbered tax invoice of `taxable_paise` to a consumer in `state_code`.
    fn consumer_invoice(number: &str, state_code: &str, taxable_paise: i64) -> TaxDocument {
        let supplier = Supplier::sample();
        let recipient = Party {
            name: "A Consumer".into(),
            legal_name: None,
            address: "1 Main Road".into(),
            state_code: state_code.into(),
            state: crate::billing::state_name(state_code).unwrap_or_default().into(),
            pin: None,
            gstin: None,
        };
        let intra = super::super::tax::is_intra_state(&supplier.state_code, state_code);
        let line = DocumentLine {
            description: "LLM inference API: llama-3.1-8b".into(),
            sac: SAC.into(),
            quantity: Some(1_000),
            unit: Some("tokens".into()),
            tax: TaxSplit::on(taxable_paise, intra),
        };
        let draft = Draft {
            id: format!("ti_{number}"),
            kind: DocumentKind::TaxInvoice,
            user_id: "usr_consumer".into(),
            created_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            recipient,
            lines: vec![line],
            references: serde_json::Map::new(),
        };
        let mut invoice = TaxDocument::draft(&supplier, draft);
        invoice.number = Some(number.into());
        invoice
    }

    #[test]
    fn large_inter_state_consumer_invoices_are_reported_one_by_one() {
        // ₹84,746 + 18% = ₹1,00,000.28: above the threshold. ₹84,745 + 18% = ₹99,999.10: summed in b2cs,
        // as is a larger one within the supplier's own state.
        let month = MonthOfDocuments {
            month: InvoiceMonth { year: 2027, month: 1 },
            documents: vec![
                consumer_invoice("TI/26-27/000001", "27", 8_474_600),
                consumer_invoice("TI/26-27/000002", "27", 8_474_500),
                consumer_invoice("TI/26-27/000003", "29", 20_000_000),
            ],
        };
        let gstr1 = month.gstr1_json("29AAICI1234F1ZQ");
        assert_eq!(
            gstr1["b2cl"],
            json!([{ "pos": "27", "inv": [{ "inum": "TI/26-27/000001", "idt": month.documents[0].date_of_issue(), "val": 100000.28,
                "itms": [{ "num": 1, "itm_det": { "rt": 18, "txval": 84746.0, "iamt": 15254.28, "csamt": 0.0 } }] }] }])
        );
        let b2cs: Vec<(Value, Value)> = gstr1["b2cs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| (row["pos"].clone(), row["txval"].clone()))
            .collect();
        assert_eq!(b2cs, [(json!("27"), json!(84745.0)), (json!("29"), json!(200000.0))]);
        let sheet = month.csv("b2cl").unwrap_or_default();
        let rows: Vec<&str> = sheet.lines().collect();
        assert_eq!(rows.len(), 2, "{sheet}");
        assert!(rows[1].starts_with("TI/26-27/000001,") && rows[1].contains(",100000.28,27-Maharashtra,"), "{sheet}");
    }
}
