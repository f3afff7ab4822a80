//! GST documents for every rupee: receipt vouchers for top-ups (advances, CGST Rule 50), with the tax on
//! them charged at the top-up; a tax invoice for each month of use (s.31, Rules 46 and 47), adjusted against
//! the advances taxed; refund vouchers for advances given back (Rule 51); the documents' numbering (Rule
//! 46(b)), storage, PDF and JSON forms.
//!
//! Our side as the supplier is configured per deploy (`config::Supplier`); the customer's side is the
//! billing profile in force when the top-up was ordered (`billing`), kept on each document.

pub mod advances;
pub mod documents;
pub mod invoice_run;
pub mod invoices;
pub mod numbering;
pub mod pdf;
pub mod receipts;
pub mod refunds;
pub mod returns;
pub mod tax;
pub mod words;

pub use documents::{DocumentKind, Party, TaxDocument, TaxDocumentSummary};
pub use tax::TaxSplit;

use crate::config::Supplier;

/// Whether a configured supplier can go on a document: its GSTIN valid (format and check character) and its
/// state one GST knows.
pub fn supplier_is_valid(supplier: &Supplier) -> bool {
    let gstin_ok = crate::kyc::documents::Gstin::parse(&supplier.gstin).is_ok_and(|g| g.as_str() == supplier.gstin);
    gstin_ok && crate::billing::state_name(&supplier.state_code).is_some() && !supplier.legal_name.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_supplier_is_valid_and_a_bad_check_character_is_not() {
        assert!(supplier_is_valid(&Supplier::sample()));
        let wrong = Supplier { gstin: "29AAICI1234F1ZA".into(), ..Supplier::sample() };
        assert!(!supplier_is_valid(&wrong));
    }
}
