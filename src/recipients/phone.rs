//! Phone numbers in E.164, the one form crier stores and compares.
//!
//! Imports meet every local habit (`082 123 4567`, `+27 (0)82…`, `0027…`); numbers
//! without a `+` are read in the configured default region. libphonenumber's rules (via
//! the `phonenumber` crate) decide validity, so a number that only looks right is not
//! sent to.
//!
//! The rules are phonenumber's, but not its matching: `phonenumber::is_valid` looks up
//! each of a region's ten pattern descriptors in a regex cache behind one global mutex
//! and searches it unanchored, which was half of an import's parsing time. [`Patterns`]
//! compiles the same patterns once per country code, anchored, and answers the same
//! question (`phonenumber::is_valid`, proved over many numbers in the tests below); codes
//! shared by several regions (`+1`, `+44`, `+7`…) still go to phonenumber, which picks
//! the region by leading digits.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use phonenumber::PhoneNumber;
use phonenumber::country::Id;
use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use regex::{Regex, RegexBuilder};

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
    let code = number.country().code();
    let national = number.national().to_string();
    if !is_valid(code, &national, &number) {
        return None;
    }
    // phonenumber's E.164 form, without the national-format lookup its formatter does
    // first (a valid number's code always has metadata).
    Some(format!("+{code}{national}"))
}

/// Splits a cell that may hold several numbers (`082 123 4567, 021 555 0100`) and returns
/// the first that is valid, or `None`.
pub fn first_valid(raw: &str, region: Id) -> Option<String> {
    raw.split([',', ';', '/'])
        .find_map(|part| to_e164(part, region))
}

/// `phonenumber::is_valid(number)`, where `code` and `national` are the number's.
fn is_valid(code: u16, national: &str, number: &PhoneNumber) -> bool {
    match patterns(code) {
        Some(p) => p.is_valid(national),
        None => phonenumber::is_valid(number),
    }
}

/// A descriptor's test: `phonenumber`'s `Descriptor::is_match` (the length among the
/// possible ones, if listed, and a match of the pattern that starts at the first digit).
struct Desc {
    lengths: Vec<u16>,
    pattern: Regex,
}

impl Desc {
    fn new(d: &Descriptor) -> Option<Desc> {
        // Built as phonenumber's database builds it: metadata patterns are laid out on
        // several lines.
        let pattern = RegexBuilder::new(&format!("^(?:{})", d.national_number().as_str()))
            .ignore_whitespace(true)
            .build()
            .ok()?;
        Some(Desc {
            lengths: d.possible_length().to_vec(),
            pattern,
        })
    }

    fn is_match(&self, value: &str) -> bool {
        (self.lengths.is_empty() || self.lengths.contains(&(value.len() as u16)))
            && self.pattern.is_match(value)
    }
}

/// The validity test of one country code's metadata: phonenumber's `number_type` is not
/// `Unknown` when the general descriptor matches and so does one of the typed ones.
struct Patterns {
    general: Desc,
    types: Vec<Desc>,
}

impl Patterns {
    fn new(meta: &Metadata) -> Option<Patterns> {
        let d = meta.descriptors();
        let typed = [
            d.premium_rate(),
            d.toll_free(),
            d.shared_cost(),
            d.voip(),
            d.personal_number(),
            d.pager(),
            d.uan(),
            d.voicemail(),
            d.fixed_line(),
            d.mobile(),
        ];
        let mut types = Vec::new();
        for t in typed.into_iter().flatten() {
            types.push(Desc::new(t)?);
        }
        Some(Patterns {
            general: Desc::new(d.general())?,
            types,
        })
    }

    fn is_valid(&self, national: &str) -> bool {
        self.general.is_match(national) && self.types.iter().any(|t| t.is_match(national))
    }
}

/// Compiled patterns by country code; `None` for a code phonenumber must resolve itself
/// (several regions, or no metadata).
static PATTERNS: LazyLock<RwLock<HashMap<u16, Option<Arc<Patterns>>>>> =
    LazyLock::new(Default::default);

fn patterns(code: u16) -> Option<Arc<Patterns>> {
    if let Some(p) = PATTERNS.read().ok().and_then(|m| m.get(&code).cloned()) {
        return p;
    }
    // As `phonenumber::validator::source_for` picks the metadata when the code has one
    // region: that region's, or the code's own for non-geographic codes (`001`).
    let compiled = DATABASE
        .region(&code)
        .filter(|regions| regions.len() == 1)
        .and_then(|regions| {
            if regions[0] == "001" {
                DATABASE.by_code(&code).and_then(|m| m.into_iter().next())
            } else {
                DATABASE.by_id(regions[0])
            }
        })
        .and_then(Patterns::new)
        .map(Arc::new);
    if let Ok(mut m) = PATTERNS.write() {
        m.insert(code, compiled.clone());
    }
    compiled
}

#[cfg(test)]
mod tests {
    use super::*;
    use phonenumber::Mode;

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

    /// phonenumber's own answer, as `to_e164` computed it before [`Patterns`].
    fn reference(raw: &str, region: Id) -> Option<String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return None;
        }
        let number = phonenumber::parse(Some(region), trimmed).ok()?;
        if !phonenumber::is_valid(&number) {
            return None;
        }
        Some(number.format().mode(Mode::E164).to_string())
    }

    /// Numbers of every shape an import meets: national with and without the trunk
    /// prefix, `+` and `00` international forms of the default and other codes, too short,
    /// too long, punctuated, every leading digit pair.
    fn samples(seed: u64, n: usize) -> Vec<String> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let leads = [
            "", "0", "+27", "0027", "27", "+1", "+44", "+49", "+39", "+800", "00",
        ];
        (0..n)
            .map(|i| {
                let lead = leads[i % leads.len()];
                let pair = (i / leads.len()) % 100;
                let len = (next() % 12) as usize;
                let mut s = format!("{lead}{pair:02}");
                for k in 0..len {
                    if k % 3 == 0 && next() % 2 == 0 {
                        s.push([' ', '-', '.'][(next() % 3) as usize]);
                    }
                    s.push(char::from(b'0' + (next() % 10) as u8));
                }
                s
            })
            .collect()
    }

    #[test]
    fn agrees_with_phonenumber_on_valid_and_invalid_numbers() {
        let mut valid = 0;
        for (region, seed) in [
            ("ZA", 7),
            ("GB", 11),
            ("US", 13),
            ("DE", 17),
            ("IT", 19),
            ("NZ", 23),
        ] {
            let region = parse_region(region).unwrap();
            for raw in samples(seed, 20_000) {
                let expected = reference(&raw, region);
                valid += usize::from(expected.is_some());
                assert_eq!(to_e164(&raw, region), expected, "{raw} in {region:?}");
            }
        }
        // Both answers occur often, so the comparison means something.
        assert!(
            valid > 10_000 && valid < 100_000,
            "{valid} valid of 120,000"
        );
    }

    #[test]
    fn agrees_with_phonenumber_on_every_south_african_prefix() {
        let za = parse_region("ZA").unwrap();
        let mut valid = 0;
        for prefix in 0..1000u32 {
            for tail in ["000000", "1234567", "55512", "9999999", "12345678"] {
                for raw in [
                    format!("0{prefix:03}{tail}"),
                    format!("+27{prefix:03}{tail}"),
                ] {
                    let expected = reference(&raw, za);
                    valid += usize::from(expected.is_some());
                    assert_eq!(to_e164(&raw, za), expected, "{raw}");
                }
            }
        }
        assert!(valid > 500, "{valid}");
    }
}
