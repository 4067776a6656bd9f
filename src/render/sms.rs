//! SMS encoding and part counting: GSM-7 or UCS-2, and how many parts a text costs.
//!
//! A text that fits the GSM 03.38 alphabet (basic table, plus the extension table at two
//! septets a character) goes as GSM-7: 160 septets in one part, 153 per part when split.
//! Any other character turns the whole text into UCS-2: 70 UTF-16 units in one part, 67
//! per part, and a character outside the BMP (most emoji) takes two units. Parts are
//! filled greedily and a character is never split across two parts (an escape pair or a
//! surrogate pair stays whole), so the count is not always `ceil(len / 153)`. This
//! follows Twilio's segment calculator, as recorded in `shared/specs/providers.md` §5.

/// How the text is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
        }
    }
}

/// A text's encoding and cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 units (UCS-2).
    pub units: usize,
    pub parts: usize,
}

/// The GSM 03.38 basic table, in code order (0x1B, the escape, is not a character).
const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The extension table: each costs an escape and a code, two septets.
const EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// Septets each ASCII character costs in GSM-7 (0: GSM-7 cannot carry it), from the
/// tables above: most texts are ASCII, and a table look-up beats searching the tables.
const ASCII_SEPTETS: [u8; 128] = {
    let mut table = [0u8; 128];
    let extension = EXTENSION.as_bytes();
    let mut i = 0;
    while i < extension.len() {
        if extension[i] < 128 {
            table[extension[i] as usize] = 2;
        }
        i += 1;
    }
    // A character of both tables costs what the basic one says (as `gsm_septets` did).
    let basic = BASIC.as_bytes();
    let mut i = 0;
    while i < basic.len() {
        if basic[i] < 128 && basic[i] != 0x1b {
            table[basic[i] as usize] = 1;
        }
        i += 1;
    }
    table
};

/// Septets `c` costs in GSM-7, or `None` if GSM-7 cannot carry it.
pub fn gsm_septets(c: char) -> Option<usize> {
    if c.is_ascii() {
        return match ASCII_SEPTETS[c as usize] {
            0 => None,
            n => Some(n as usize),
        };
    }
    if BASIC.contains(c) {
        Some(1)
    } else if EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Encoding, units and parts of `text`.
pub fn count(text: &str) -> Parts {
    let gsm = text
        .chars()
        .try_fold(0usize, |units, c| gsm_septets(c).map(|n| units + n));
    let (encoding, units, single, per_part) = match gsm {
        Some(units) => (Encoding::Gsm7, units, 160, 153),
        None => (Encoding::Ucs2, text.encode_utf16().count(), 70, 67),
    };
    if units == 0 {
        return Parts {
            encoding,
            units,
            parts: 0,
        };
    }
    if units <= single {
        return Parts {
            encoding,
            units,
            parts: 1,
        };
    }
    let size = |c: char| match encoding {
        Encoding::Gsm7 => gsm_septets(c).unwrap_or(1),
        Encoding::Ucs2 => c.len_utf16(),
    };
    let mut parts = 1;
    let mut room = per_part;
    for size in text.chars().map(size) {
        if size > room {
            parts += 1;
            room = per_part;
        }
        room -= size;
    }
    Parts {
        encoding,
        units,
        parts,
    }
}

/// Replaces typographic characters that have a plain GSM-7 equivalent (curly quotes,
/// dashes, ellipsis, non-breaking spaces…), so one pasted apostrophe does not turn a
/// one-part message into a three-part UCS-2 one. Other characters are left alone.
pub fn gsm_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}' | '\u{2032}' | '\u{b4}' | '`' => {
                out.push('\'')
            }
            '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{201f}' | '\u{2033}' | '\u{ab}'
            | '\u{bb}' => out.push('"'),
            '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2015}'
            | '\u{2212}' => out.push('-'),
            '\u{2026}' => out.push_str("..."),
            '\u{a0}' | '\u{2002}' | '\u{2003}' | '\u{2007}' | '\u{2009}' | '\u{202f}' => {
                out.push(' ')
            }
            '\u{2022}' | '\u{b7}' => out.push('-'),
            '\u{200b}' | '\u{feff}' => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_table_has_127_characters_and_extension_10() {
        assert_eq!(BASIC.chars().filter(|c| *c != '\u{1b}').count(), 127);
        assert_eq!(EXTENSION.chars().count(), 10);
    }

    #[test]
    fn the_ascii_look_up_agrees_with_the_tables() {
        for b in 0u8..128 {
            let c = b as char;
            let searched = if c != '\u{1b}' && BASIC.contains(c) {
                Some(1)
            } else if EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            };
            assert_eq!(gsm_septets(c), searched, "{b:#04x}");
        }
    }

    #[test]
    fn tricky_strings() {
        let a160 = "a".repeat(160);
        let a161 = "a".repeat(161);
        let a306 = "a".repeat(306);
        let a307 = "a".repeat(307);
        let euro80 = "€".repeat(80);
        let euro81 = "€".repeat(81);
        // 152 'a' then '€' (2 septets) does not fit the first 153-septet part whole.
        let split_escape = format!("{}€{}", "a".repeat(152), "a".repeat(10));
        let u70 = "ж".repeat(70);
        let u71 = "ж".repeat(71);
        let u134 = "ж".repeat(134);
        // 66 units then an emoji (2 units) does not fit the first 67-unit part.
        let split_pair = format!("{}😀{}", "ж".repeat(66), "ж".repeat(5));
        let cases: &[(&str, Encoding, usize, usize)] = &[
            ("", Encoding::Gsm7, 0, 0),
            ("Hello", Encoding::Gsm7, 5, 1),
            (&a160, Encoding::Gsm7, 160, 1),
            (&a161, Encoding::Gsm7, 161, 2),
            (&a306, Encoding::Gsm7, 306, 2),
            (&a307, Encoding::Gsm7, 307, 3),
            (&euro80, Encoding::Gsm7, 160, 1),
            (&euro81, Encoding::Gsm7, 162, 2),
            (&split_escape, Encoding::Gsm7, 164, 2),
            ("Price: R100 {incl. VAT} [a|b] ~^\\", Encoding::Gsm7, 41, 1),
            ("Café déjà vu: Ünïcödé?", Encoding::Ucs2, 22, 1),
            ("It’s due", Encoding::Ucs2, 8, 1),
            ("Back`tick", Encoding::Ucs2, 9, 1),
            (&u70, Encoding::Ucs2, 70, 1),
            (&u71, Encoding::Ucs2, 71, 2),
            (&u134, Encoding::Ucs2, 134, 2),
            ("😀", Encoding::Ucs2, 2, 1),
            (&split_pair, Encoding::Ucs2, 73, 2),
            ("line\r\nbreak", Encoding::Gsm7, 11, 1),
            ("Ç@£$¥èéùìò", Encoding::Gsm7, 10, 1),
        ];
        for (text, encoding, units, parts) in cases {
            let p = count(text);
            assert_eq!(
                ((p.encoding, p.units), p.parts),
                ((*encoding, *units), *parts),
                "{text:?}"
            );
        }
        // The split escape really is the reason for the second part: without it, one.
        assert_eq!(count(&"a".repeat(160)).parts, 1);
        assert_eq!(count(&split_escape).parts, 2);
    }

    #[test]
    fn gsm_safe_keeps_a_message_in_gsm7() {
        let text = "It’s “due” – pay now…";
        assert_eq!(count(text).encoding, Encoding::Ucs2);
        let safe = gsm_safe(text);
        assert_eq!(safe, "It's \"due\" - pay now...");
        assert_eq!(count(&safe).encoding, Encoding::Gsm7);
        // Characters without an equivalent stay, and so does UCS-2.
        assert_eq!(count(&gsm_safe("Спасибо")).encoding, Encoding::Ucs2);
    }
}
