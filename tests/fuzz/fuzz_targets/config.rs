//! `crier.yaml`: validated, or refused with positioned diagnostics.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        crier::fuzz::config(Path::new("/nonexistent/crier.yaml"), text);
    }
});
