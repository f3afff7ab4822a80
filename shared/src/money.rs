//! Money is integers only. The wallet's unit is the **nano-rupee**: 1 rupee = 1,000,000,000 units and
//! 1 paisa = 10,000,000 units. Prices are set in paise per million tokens, so the cost of a single token is
//! (price in paise × 10,000,000) / 1,000,000 = price × 10 units: an exact integer for every price, and non-zero
//! for the cheapest model. No rounding ever happens inside the wallet; payment amounts (integer paise from
//! Razorpay) convert exactly. An i64 holds ±9.2 billion rupees in this unit.

/// Wallet units in one paisa.
pub const UNITS_PER_PAISA: i64 = 10_000_000;
/// Wallet units in one rupee.
pub const UNITS_PER_RUPEE: i64 = 100 * UNITS_PER_PAISA;

/// Converts integer paise to wallet units; None on overflow.
pub fn paise_to_units(paise: i64) -> Option<i64> {
    paise.checked_mul(UNITS_PER_PAISA)
}

/// A decimal rupee string with at least two decimals and no trailing zeros beyond them:
/// 500 rupees -> "500.00", 499.999995 rupees -> "499.999995", -1 paisa -> "-0.01".
pub fn format_inr(units: i64) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    let per_rupee = UNITS_PER_RUPEE.unsigned_abs();
    let rupees = abs / per_rupee;
    let fraction = format!("{:09}", abs % per_rupee);
    let trimmed = fraction.trim_end_matches('0');
    let decimals = if trimmed.len() < 2 { &fraction[..2] } else { trimmed };
    format!("{sign}{rupees}.{decimals}")
}

/// Whole paise as rupees with two decimals: 118000 -> "1180.00" (tax documents, GST returns).
pub fn format_paise(paise: i64) -> String {
    format_inr(paise.saturating_mul(UNITS_PER_PAISA))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rupees_exactly() {
        assert_eq!(
            (format_paise(118_000), format_paise(5), format_paise(-1_050)),
            ("1180.00".into(), "0.05".into(), "-10.50".into())
        );
        assert_eq!(format_inr(0), "0.00");
        assert_eq!(format_inr(500 * UNITS_PER_RUPEE), "500.00");
        assert_eq!(format_inr(UNITS_PER_PAISA), "0.01");
        assert_eq!(format_inr(-UNITS_PER_PAISA), "-0.01");
        assert_eq!(format_inr(123_456 * UNITS_PER_PAISA + 5), "1234.560000005");
        assert_eq!(format_inr(500 * UNITS_PER_RUPEE - 5_000), "499.999995");
        assert_eq!(format_inr(i64::MIN), "-9223372036.854775808");
    }

    #[test]
    fn paise_convert_without_loss() {
        assert_eq!(paise_to_units(50_000), Some(500 * UNITS_PER_RUPEE));
        assert_eq!(paise_to_units(i64::MAX), None);
    }
}
