//! BulkSms delivery reports: the input as the request body.

#![no_main]

use crier::fuzz::{Webhook, webhook};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = webhook(Webhook::BulkSms, data, None);
});
