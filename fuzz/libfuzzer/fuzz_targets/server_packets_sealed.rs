#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netdump_fuzz::server_packets_sealed(data));
