//! Phone numbers in E.164, the one form crier stores and compares.
//!
//! Imports meet every local habit (`082 123 4567`, `+27 (0)82…`, `0027…`); numbers
//! without a `+` are read in the configured default region. libphonenumber's rules (via
//! the `phonenumber` crate) decide validity, so a number that only looks right is not
//! sent to.

use phonenumber::country::Id;
use phonenumber::{Mode, PhoneNumber};

/// Parses an ISO 3166 region code such as `ZA`.
pub fn parse_region(code: &str) -> Option<Id> {
    code.trim().to_ascii_uppercase().parse::<Id>().ok()
}

/// Normalises `raw` to E.164 (`+27821234567`), or `None` if it is not a valid number.
pub fn to_e164(raw: &str, region: Id) -> Option<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return None;
    }
    let number: PhoneNumber = phonenumber::parse(Some(region), trimmed).ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    Some(number.format().mode(Mode::E164).to_string())
}

/// Splits a cell that may hold several numbers (`082 123 4567, 021 555 0100`) and returns
/// the first that is valid, or `None`.
pub fn first_valid(raw: &str, region: Id) -> Option<String> {
    raw.split([',', ';', '/'])
        .find_map(|part| to_e164(part, region))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_local_and_international_forms() {
        let za = parse_region("za").unwrap();
        assert_eq!(to_e164("082 123 4567", za).as_deref(), Some("+27821234567"));
        assert_eq!(
            to_e164("+27 82 123 4567", za).as_deref(),
            Some("+27821234567")
        );
        assert_eq!(
            to_e164("020 7183 8750", parse_region("GB").unwrap()).as_deref(),
            Some("+442071838750")
        );
        // An international number is not reinterpreted by the default region.
        assert_eq!(
            to_e164("+1 415 555 2671", za).as_deref(),
            Some("+14155552671")
        );
    }

    #[test]
    fn rejects_what_is_not_a_number() {
        let za = parse_region("ZA").unwrap();
        assert_eq!(to_e164("12", za), None);
        assert_eq!(to_e164("not a phone", za), None);
        assert_eq!(to_e164("", za), None);
        assert_eq!(parse_region("XX"), None);
    }

    #[test]
    fn takes_the_first_valid_of_several() {
        let za = parse_region("ZA").unwrap();
        assert_eq!(
            first_valid("n/a; 082 123 4567", za).as_deref(),
            Some("+27821234567")
        );
    }
}
