//! SMS part counting against the reference counter of the property tests.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../sms_reference.rs"]
mod reference;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parts = crier::fuzz::sms(text);
    assert_eq!(
        (parts.encoding, parts.units, parts.parts),
        reference::count(text),
        "{text:?}"
    );
});
