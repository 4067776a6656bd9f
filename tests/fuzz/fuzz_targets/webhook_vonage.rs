//! Vonage delivery reports: the input as the body, and (when it is UTF-8) as the query
//! string of a body-less request.

#![no_main]

use crier::fuzz::{Webhook, webhook};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = webhook(Webhook::Vonage, data, None);
    if let Ok(query) = std::str::from_utf8(data) {
        let _ = webhook(Webhook::Vonage, b"", Some(query));
    }
});
