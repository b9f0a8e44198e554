//! Minor units to text for people: `2500 EUR` is "25.00 EUR", `2500 JPY`
//! is "2,500 JPY". The decimals per currency come from
//! `orderflow_events::currency`.

use orderflow_events::currency::decimals;

/// "1,234.50 EUR": thousands separated, the currency's decimals, its code.
pub fn format(amount_minor: i64, currency: &str) -> String {
    let places = decimals(currency);
    let scale = 10_u64.pow(places);
    let magnitude = amount_minor.unsigned_abs();
    let (major, minor) = (magnitude / scale, magnitude % scale);
    let digits = major.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if amount_minor < 0 { "-" } else { "" };
    if places == 0 {
        format!("{sign}{grouped} {currency}")
    } else {
        format!(
            "{sign}{grouped}.{minor:0width$} {currency}",
            width = places as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::format;

    #[test]
    fn decimals_follow_the_currency() {
        assert_eq!(format(2500, "EUR"), "25.00 EUR");
        assert_eq!(format(5, "USD"), "0.05 USD");
        assert_eq!(format(0, "EUR"), "0.00 EUR");
        assert_eq!(format(2500, "JPY"), "2,500 JPY");
        assert_eq!(format(1_234_567, "KWD"), "1,234.567 KWD");
        assert_eq!(format(123_456_789, "GBP"), "1,234,567.89 GBP");
        assert_eq!(format(-150, "EUR"), "-1.50 EUR");
        assert_eq!(format(i64::MIN, "EUR"), "-92,233,720,368,547,758.08 EUR");
    }
}
