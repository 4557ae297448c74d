#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netdump_fuzz::client_receive_sealed(data));
