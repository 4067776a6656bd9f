//! A template and a recipient: the input is the template, then after a NUL the
//! recipient's name, email, phone and attributes `balance`, `due` and `x`, separated by
//! the unit separator (0x1F).

#![no_main]

use std::collections::BTreeMap;

use crier::recipients::{Recipient, RecipientKind, Status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (source, fields) = text.split_once('\0').unwrap_or((text, ""));
    let mut fields = fields.split('\u{1f}').map(str::to_string);
    let mut next = || fields.next();
    let name = next().unwrap_or_default();
    let email = next();
    let phone = next();
    let attrs: BTreeMap<String, String> = ["balance", "due", "x"]
        .into_iter()
        .filter_map(|k| next().map(|v| (k.to_string(), v)))
        .collect();
    let recipient = Recipient {
        kind: RecipientKind::Customer,
        id: 7,
        login: Some("ann".into()),
        status: Status::Active,
        name,
        email,
        billing_email: None,
        phone: phone.clone(),
        phone_raw: phone,
        category: None,
        location: None,
        billing_type: None,
        partner: None,
        tariffs: Vec::new(),
        timezone: None,
        attrs,
    };
    let _ = crier::fuzz::template(source, &recipient, &BTreeMap::new());
});
