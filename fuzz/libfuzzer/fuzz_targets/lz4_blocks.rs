#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netdump_fuzz::lz4_blocks(data));
