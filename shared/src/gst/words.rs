//! Amounts in words, as Indian tax documents print their total: the Indian system of lakhs and crores,
//! rupees and paise.

const ONES: [&str; 20] = [
    "Zero",
    "One",
    "Two",
    "Three",
    "Four",
    "Five",
    "Six",
    "Seven",
    "Eight",
    "Nine",
    "Ten",
    "Eleven",
    "Twelve",
    "Thirteen",
    "Fourteen",
    "Fifteen",
    "Sixteen",
    "Seventeen",
    "Eighteen",
    "Nineteen",
];
const TENS: [&str; 10] = ["", "", "Twenty", "Thirty", "Forty", "Fifty", "Sixty", "Seventy", "Eighty", "Ninety"];

/// 0 to 99.
fn below_hundred(n: u64) -> String {
    match n {
        0..=19 => ONES[n as usize].to_owned(),
        _ if n.is_multiple_of(10) => TENS[(n / 10) as usize].to_owned(),
        _ => format!("{} {}", TENS[(n / 10) as usize], ONES[(n % 10) as usize]),
    }
}

/// 1 to 999.
fn below_thousand(n: u64) -> String {
    match (n / 100, n % 100) {
        (0, rest) => below_hundred(rest),
        (hundreds, 0) => format!("{} Hundred", ONES[hundreds as usize]),
        (hundreds, rest) => format!("{} Hundred {}", ONES[hundreds as usize], below_hundred(rest)),
    }
}

/// A whole number in the Indian system: crores, lakhs, thousands, the rest.
fn number(n: u64) -> String {
    if n == 0 {
        return ONES[0].to_owned();
    }
    let mut parts = Vec::new();
    let crores = n / 10_000_000;
    if crores > 0 {
        parts.push(format!("{} Crore", number(crores)));
    }
    for (value, unit) in [((n / 100_000) % 100, "Lakh"), ((n / 1_000) % 100, "Thousand")] {
        if value > 0 {
            parts.push(format!("{} {unit}", below_hundred(value)));
        }
    }
    if !n.is_multiple_of(1_000) {
        parts.push(below_thousand(n % 1_000));
    }
    parts.join(" ")
}

/// "Rupees One Thousand One Hundred Eighty and Fifty Paise Only".
pub fn amount_in_words(paise: i64) -> String {
    let sign = if paise < 0 { "Minus " } else { "" };
    let paise = paise.unsigned_abs();
    let (rupees, rest) = (paise / 100, paise % 100);
    match rest {
        0 => format!("{sign}Rupees {} Only", number(rupees)),
        _ => format!("{sign}Rupees {} and {} Paise Only", number(rupees), below_hundred(rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indian_words() {
        assert_eq!(amount_in_words(118_000), "Rupees One Thousand One Hundred Eighty Only");
        assert_eq!(amount_in_words(118_050), "Rupees One Thousand One Hundred Eighty and Fifty Paise Only");
        assert_eq!(amount_in_words(59_000_000), "Rupees Five Lakh Ninety Thousand Only");
        assert_eq!(
            amount_in_words(1_234_567_801),
            "Rupees One Crore Twenty Three Lakh Forty Five Thousand Six Hundred Seventy Eight and One Paise Only"
        );
        assert_eq!(amount_in_words(5), "Rupees Zero and Five Paise Only");
        assert_eq!(amount_in_words(-11_800), "Minus Rupees One Hundred Eighteen Only");
    }
}
