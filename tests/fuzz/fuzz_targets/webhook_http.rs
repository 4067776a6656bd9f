//! The generic gateway's delivery reports, under a JSON, a form and a query mapping.

#![no_main]

use crier::fuzz::{Webhook, webhook};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = webhook(Webhook::HttpJson, data, None);
    let _ = webhook(Webhook::HttpForm, data, None);
    if let Ok(query) = std::str::from_utf8(data) {
        let _ = webhook(Webhook::HttpQuery, b"", Some(query));
    }
});
