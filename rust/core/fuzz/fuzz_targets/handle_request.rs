//! libFuzzer target: any bytes, read as a short sequence of requests (see `src/harness.rs`
//! for the format), through one `Service` over a memory store on a manual clock; a panic is a finding.

#![no_main]

#[path = "../src/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
