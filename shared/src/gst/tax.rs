//! GST on our one supply, in whole paise: SAC 998315 at 18%, split CGST 9% + SGST 9% when the place of supply
//! (the customer's billing state) is the supplier's state, IGST 18% otherwise (IGST Act s.12(2): for a
//! service, the recipient's address on record is the place of supply).
//!
//! Rounding, as published: each tax is computed on the taxable value in paise and rounded half up to the
//! paisa (CGST 9% and SGST 9% separately, so an intra-state total may differ from an inter-state one by a
//! paisa). The total is the taxable value plus the taxes.

use serde::{Deserialize, Serialize};

/// "Other hosting and IT infrastructure provisioning services": LLM inference served over an API.
pub const SAC: &str = "998315";
pub const SERVICE_DESCRIPTION: &str = "LLM inference API (hosting and IT infrastructure provisioning)";
/// The GST rate on SAC 998315, percent.
pub const GST_RATE_PERCENT: i64 = 18;

/// A taxable value and the tax on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxSplit {
    pub taxable_paise: i64,
    pub cgst_paise: i64,
    pub sgst_paise: i64,
    pub igst_paise: i64,
    pub total_paise: i64,
}

/// `percent`% of `paise`, rounded half up (non-negative amounts; a negative one is rounded as its opposite).
fn percent_of(paise: i64, percent: i64) -> i64 {
    let value = i128::from(paise.abs()) * i128::from(percent);
    let rounded = i64::try_from((value + 50) / 100).unwrap_or(i64::MAX);
    if paise < 0 { -rounded } else { rounded }
}

impl TaxSplit {
    /// The tax on `taxable_paise`, intra-state (CGST + SGST) or not (IGST).
    pub fn on(taxable_paise: i64, intra_state: bool) -> Self {
        let half = GST_RATE_PERCENT / 2;
        let (cgst, sgst, igst) = if intra_state {
            (percent_of(taxable_paise, half), percent_of(taxable_paise, half), 0)
        } else {
            (0, 0, percent_of(taxable_paise, GST_RATE_PERCENT))
        };
        let total = taxable_paise.saturating_add(cgst).saturating_add(sgst).saturating_add(igst);
        Self { taxable_paise, cgst_paise: cgst, sgst_paise: sgst, igst_paise: igst, total_paise: total }
    }

    pub fn tax_paise(&self) -> i64 {
        self.cgst_paise + self.sgst_paise + self.igst_paise
    }

    /// Sums of several lines.
    pub fn sum<'a>(splits: impl IntoIterator<Item = &'a TaxSplit>) -> Self {
        let mut total = Self { taxable_paise: 0, cgst_paise: 0, sgst_paise: 0, igst_paise: 0, total_paise: 0 };
        for s in splits {
            total.taxable_paise += s.taxable_paise;
            total.cgst_paise += s.cgst_paise;
            total.sgst_paise += s.sgst_paise;
            total.igst_paise += s.igst_paise;
            total.total_paise += s.total_paise;
        }
        total
    }
}

/// Whether a supply to `place_of_supply` from `supplier_state` is intra-state (both two-digit state codes).
pub fn is_intra_state(supplier_state: &str, place_of_supply: &str) -> bool {
    supplier_state == place_of_supply
}

/// What a payment of `paid` paise, which credited `credit` paise (the rest being GST), gives back to the
/// wallet's credit when `part` of it goes back (a refund, a chargeback): its share, rounded up, so the wallet
/// never keeps credit for money that left. A payment without tax (`paid == credit`) maps one to one.
pub fn credit_share(part: i64, credit: i64, paid: i64) -> i64 {
    if paid <= 0 || paid == credit {
        return part;
    }
    let numerator = i128::from(part) * i128::from(credit);
    let share = (numerator + i128::from(paid) - 1) / i128::from(paid);
    i64::try_from(share).unwrap_or(i64::MAX).min(credit)
}

/// The money that sends `part` of a payment's credit back: the credit with the GST charged on it (the refund
/// voucher reverses that tax), in proportion and rounded down; the whole credit gives back the whole payment.
pub fn paid_share(part: i64, credit: i64, paid: i64) -> i64 {
    if credit <= 0 || paid == credit {
        return part;
    }
    let share = i128::from(part) * i128::from(paid) / i128::from(credit);
    i64::try_from(share).unwrap_or(i64::MAX).min(paid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intra_state_splits_in_halves_and_inter_state_is_igst() {
        let intra = TaxSplit::on(100_000, true);
        assert_eq!(
            (intra.cgst_paise, intra.sgst_paise, intra.igst_paise, intra.total_paise),
            (9_000, 9_000, 0, 118_000)
        );
        let inter = TaxSplit::on(100_000, false);
        assert_eq!((inter.cgst_paise, inter.sgst_paise, inter.igst_paise, inter.total_paise), (0, 0, 18_000, 118_000));
    }

    #[test]
    fn each_tax_rounds_half_up_to_the_paisa() {
        // 9% of 1,005 paise is 90.45 -> 90; of 1,006 is 90.54 -> 91; 18% of 1,025 is 184.5 -> 185.
        assert_eq!(TaxSplit::on(1_005, true).cgst_paise, 90);
        assert_eq!(TaxSplit::on(1_006, true).cgst_paise, 91);
        assert_eq!(TaxSplit::on(1_025, false).igst_paise, 185);
        // Halves rounded separately: 9% of 50 is 4.5 -> 5 each, 18% of 50 is exactly 9.
        assert_eq!(TaxSplit::on(50, true).total_paise, 60);
        assert_eq!(TaxSplit::on(50, false).total_paise, 59);
        for taxable in [1, 99, 10_000, 1_234_567, 50_000_000] {
            for intra in [true, false] {
                let s = TaxSplit::on(taxable, intra);
                assert_eq!(s.total_paise, s.taxable_paise + s.tax_paise());
            }
        }
    }

    #[test]
    fn shares_of_a_taxed_payment_round_against_the_wallet() {
        // ₹1,000 credited, ₹1,180 paid.
        assert_eq!(credit_share(118_000, 100_000, 118_000), 100_000);
        assert_eq!(credit_share(1, 100_000, 118_000), 1, "a paisa back takes a paisa of credit");
        assert_eq!(credit_share(59_000, 100_000, 118_000), 50_000);
        assert_eq!(paid_share(100_000, 100_000, 118_000), 118_000);
        assert_eq!(paid_share(1, 100_000, 118_000), 1);
        assert_eq!(paid_share(50_000, 100_000, 118_000), 59_000);
        // Untaxed (older) payments map one to one.
        assert_eq!(credit_share(777, 1_000, 1_000), 777);
        assert_eq!(paid_share(777, 1_000, 1_000), 777);
    }
}
