//! libFuzzer target: `lenet_host::untrusted::parse(Parser::Head, ..)`.
#![no_main]

use lenet_host::untrusted::{Parser, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(Parser::Head, data);
});
