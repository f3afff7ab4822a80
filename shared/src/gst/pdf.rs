//! Tax documents as PDF, written with `pdf-writer`: a small, well-kept writer (from the typst project) with no
//! font files, using the standard Helvetica fonts every reader has, so the file stays a few kilobytes and its
//! text extracts exactly (the tests read it back with `pdftotext`). The standard fonts cover Latin text only:
//! anything else is printed as `?`, and the JSON form of the document keeps every character.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};

use crate::money::format_paise as rupees;

use super::documents::{DocumentLine, Party, TaxDocument};
use super::tax::{GST_RATE_PERCENT, TaxSplit};

const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 50.0;
const LEADING: f32 = 14.0;
/// Characters per line at the body size before a line wraps.
const WRAP: usize = 95;
const REGULAR: Name = Name(b"F1");
const BOLD: Name = Name(b"F2");

/// Latin-1 printable text as the standard fonts encode it (WinAnsi); anything else is `?`.
fn encoded(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{20B9}' => bytes.extend_from_slice(b"Rs."),
            ' '..='~' => bytes.push(c as u8),
            '\u{A0}'..='\u{FF}' => bytes.push(c as u32 as u8),
            _ => bytes.push(b'?'),
        }
    }
    bytes
}

/// The text lines, page by page.
struct Pages {
    pages: Vec<Content>,
    y: f32,
}

impl Pages {
    fn new() -> Self {
        let mut pages = Self { pages: Vec::new(), y: 0.0 };
        pages.new_page();
        pages
    }

    fn new_page(&mut self) {
        self.pages.push(Content::new());
        self.y = PAGE_HEIGHT - MARGIN;
    }

    fn line(&mut self, font: Name, size: f32, text: &str) {
        for chunk in wrap(text) {
            if self.y < MARGIN {
                self.new_page();
            }
            if let Some(content) = self.pages.last_mut() {
                content.begin_text().set_font(font, size).next_line(MARGIN, self.y).show(Str(&encoded(&chunk)));
                content.end_text();
            }
            self.y -= LEADING.max(size + 4.0);
        }
    }

    fn text(&mut self, text: &str) {
        self.line(REGULAR, 10.0, text);
    }

    fn heading(&mut self, text: &str) {
        self.line(BOLD, 10.0, text);
    }

    fn gap(&mut self) {
        self.y -= LEADING / 2.0;
    }
}

fn wrap(text: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let Some(current) = lines.last_mut() else { continue };
        if !current.is_empty() && current.chars().count() + word.chars().count() >= WRAP {
            lines.push(word.to_owned());
        } else {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(word);
        }
    }
    lines
}

fn party(pages: &mut Pages, role: &str, p: &Party) {
    pages.heading(&format!("{role}: {}", p.name));
    if let Some(legal) = &p.legal_name {
        pages.text(&format!("Legal name: {legal}"));
    }
    let pin = p.pin.as_deref().map(|pin| format!(" - {pin}")).unwrap_or_default();
    pages.text(&format!("Address: {}{pin}", p.address));
    pages.text(&format!("State: {} (code {})", p.state, p.state_code));
    pages.text(&format!("GSTIN: {}", p.gstin.as_deref().unwrap_or("unregistered")));
    pages.gap();
}

/// A taxable value and its taxes, each on its own line; `label` ("", or "Total ") starts each.
fn tax_lines(pages: &mut Pages, label: &str, tax: &TaxSplit) {
    let half = GST_RATE_PERCENT / 2;
    pages.text(&format!("{label}Taxable value: {}", rupees(tax.taxable_paise)));
    pages.text(&format!("{label}CGST @ {half}%: {}", rupees(tax.cgst_paise)));
    pages.text(&format!("{label}SGST @ {half}%: {}", rupees(tax.sgst_paise)));
    pages.text(&format!("{label}IGST @ {GST_RATE_PERCENT}%: {}", rupees(tax.igst_paise)));
}

fn item(pages: &mut Pages, n: usize, line: &DocumentLine) {
    let quantity = match (line.quantity, &line.unit) {
        (Some(q), Some(unit)) => format!(" | Quantity: {q} {unit}"),
        _ => String::new(),
    };
    pages.heading(&format!("{n}. {} | SAC {}{quantity}", line.description, line.sac));
    tax_lines(pages, "", &line.tax);
    pages.text(&format!("Line total: {}", rupees(line.tax.total_paise)));
    pages.gap();
}

/// A reference as a line: `received at: 2026-12-06T10:00:00Z`; an amount in paise as rupees (`advances
/// adjusted: 1000.00`).
fn reference(name: &str, value: &serde_json::Value) -> String {
    match (name.strip_suffix("_paise"), value.as_i64()) {
        (Some(amount), Some(paise)) => format!("{}: {}", amount.replace('_', " "), rupees(paise)),
        _ => format!("{}: {}", name.replace('_', " "), value.as_str().map_or(value.to_string(), str::to_owned)),
    }
}

/// The document's text, in reading order.
fn body(document: &TaxDocument) -> Pages {
    let mut pages = Pages::new();
    pages.line(BOLD, 16.0, &document.kind.title().to_uppercase());
    pages.text("Original for recipient");
    pages.gap();
    pages.text(&format!("Number: {}", document.number.as_deref().unwrap_or("not yet numbered")));
    pages.text(&format!("Date of issue: {}", document.date_of_issue()));
    pages.text(&format!("Place of supply: {}", document.place_of_supply));
    pages.text(&format!("Tax payable on reverse charge: {}", if document.reverse_charge { "Yes" } else { "No" }));
    for (name, value) in &document.references {
        pages.text(&reference(name, value));
    }
    pages.gap();
    party(&mut pages, "Supplier", &document.supplier);
    party(&mut pages, "Recipient", &document.recipient);
    for (n, line) in document.lines.iter().enumerate() {
        item(&mut pages, n + 1, line);
    }
    pages.heading("Totals");
    tax_lines(&mut pages, "Total ", &document.totals);
    pages.heading(&format!("Total amount: {}", rupees(document.totals.total_paise)));
    pages.text(&format!("Amount in words: {}", document.total_in_words));
    pages.gap();
    pages.text(&format!("For {}", document.supplier.name));
    pages.text(&document.signatory);
    pages.text("Issued electronically by the supplier.");
    pages
}

/// The document as a PDF file.
pub fn render(document: &TaxDocument) -> Vec<u8> {
    let pages = body(document);
    let mut pdf = Pdf::new();
    let (catalog, tree, regular, bold) = (Ref::new(1), Ref::new(2), Ref::new(3), Ref::new(4));
    let ids: Vec<(Ref, Ref)> =
        (0..pages.pages.len() as i32).map(|i| (Ref::new(5 + 2 * i), Ref::new(6 + 2 * i))).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(ids.iter().map(|(page, _)| *page)).count(ids.len() as i32);
    pdf.type1_font(regular).base_font(Name(b"Helvetica")).encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold).base_font(Name(b"Helvetica-Bold")).encoding_predefined(Name(b"WinAnsiEncoding"));
    for ((page_id, content_id), content) in ids.iter().zip(pages.pages) {
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT)).parent(tree).contents(*content_id);
        page.resources().fonts().pair(REGULAR, regular).pair(BOLD, bold);
        page.finish();
        pdf.stream(*content_id, &content.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Supplier;
    use crate::gst::documents::DocumentKind;

    fn document(lines: usize) -> TaxDocument {
        let recipient = Party {
            name: "Asha Rao".into(),
            legal_name: None,
            address: "12 MG Road, Bengaluru ".repeat(10),
            state_code: "29".into(),
            state: "Karnataka".into(),
            pin: Some("560001".into()),
            gstin: None,
        };
        let line = DocumentLine {
            description: "Ação ₹ model".into(),
            sac: "998315".into(),
            quantity: Some(1_000),
            unit: Some("tokens".into()),
            tax: TaxSplit::on(100, true),
        };
        TaxDocument {
            id: "rv_pay_1".into(),
            kind: DocumentKind::ReceiptVoucher,
            user_id: "usr_1".into(),
            number: Some("RV/2627/000001".into()),
            issued_at: None,
            financial_year: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
            supplier: Party::supplier(&Supplier::sample()),
            place_of_supply: TaxDocument::place_of_supply_of(&recipient),
            recipient,
            reverse_charge: false,
            lines: vec![line; lines],
            totals: TaxSplit::on(100 * lines as i64, true),
            total_in_words: String::new(),
            references: serde_json::Map::new(),
            signatory: "Authorised Signatory".into(),
        }
    }

    #[test]
    fn long_documents_run_onto_more_pages_and_text_outside_latin_1_is_marked() {
        assert_eq!(body(&document(1)).pages.len(), 1);
        assert!(body(&document(40)).pages.len() > 1, "forty lines do not fit one page");
        let file = render(&document(40));
        assert!(file.starts_with(b"%PDF-") && file.windows(5).any(|w| w == b"%%EOF"));
        assert_eq!(encoded("Ação ₹ 名"), b"A\xe7\xe3o Rs. ?".to_vec());
        assert!(wrap(&"word ".repeat(60)).iter().all(|l| l.chars().count() <= WRAP));
    }
}
