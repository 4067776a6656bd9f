//! An import file: every row a recipient or a rejection naming its column.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    crier::fuzz::csv(data);
});
