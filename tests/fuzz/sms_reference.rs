//! An SMS part counter written from GSM 03.38 and the concatenation rules, to check
//! crier's against: it encodes the text (septets with escapes, or UTF-16) and cuts the
//! encoded stream as a sender would, never between an escape and its character or
//! between the halves of a surrogate pair. Shared by `tests/fuzz.rs` and the `sms`
//! fuzz target.

use crier::render::sms::Encoding;

/// The GSM 03.38 default alphabet by code, in columns of 16 (0x00–0x0F, 0x10–0x1F, …)
/// as the standard prints it; 0x1B is the escape to the extension table.
const COLUMNS: [&str; 8] = [
    "@£$¥èéùìòÇ\nØø\rÅå",
    "Δ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ",
    " !\"#¤%&'()*+,-./",
    "0123456789:;<=>?",
    "¡ABCDEFGHIJKLMNO",
    "PQRSTUVWXYZÄÖÑÜ§",
    "¿abcdefghijklmno",
    "pqrstuvwxyzäöñüà",
];
const ESC: u8 = 0x1b;
/// The extension table: code after the escape, and its character.
const EXTENSION: [(u8, char); 10] = [
    (0x0a, '\u{c}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2f, '\\'),
    (0x3c, '['),
    (0x3d, '~'),
    (0x3e, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// The septets of `text`, or `None` when GSM-7 cannot carry it.
pub fn septets(text: &str) -> Option<Vec<u8>> {
    let table: Vec<char> = COLUMNS.iter().flat_map(|c| c.chars()).collect();
    assert_eq!(table.len(), 128);
    let mut out = Vec::new();
    for c in text.chars() {
        if let Some(code) = table
            .iter()
            .position(|t| *t == c)
            .filter(|&p| p as u8 != ESC)
        {
            out.push(code as u8);
        } else if let Some((code, _)) = EXTENSION.iter().find(|(_, e)| *e == c) {
            out.extend([ESC, *code]);
        } else {
            return None;
        }
    }
    Some(out)
}

/// How many messages `units` is sent as: one when it fits `single`, else cut every
/// `per_part` units, one unit earlier where the cut would split a pair.
fn split<T>(
    units: &[T],
    single: usize,
    per_part: usize,
    splits_pair: impl Fn(&T) -> bool,
) -> usize {
    if units.is_empty() {
        return 0;
    }
    if units.len() <= single {
        return 1;
    }
    let (mut at, mut parts) = (0, 0);
    while at < units.len() {
        let mut end = (at + per_part).min(units.len());
        if end < units.len() && splits_pair(&units[end - 1]) {
            end -= 1;
        }
        at = end;
        parts += 1;
    }
    parts
}

/// Encoding, units and parts, as the network counts them.
pub fn count(text: &str) -> (Encoding, usize, usize) {
    match septets(text) {
        Some(s) => (Encoding::Gsm7, s.len(), split(&s, 160, 153, |u| *u == ESC)),
        None => {
            let utf16: Vec<u16> = text.encode_utf16().collect();
            let high = |u: &u16| (0xd800..0xdc00).contains(u);
            (Encoding::Ucs2, utf16.len(), split(&utf16, 70, 67, high))
        }
    }
}
