#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| egret::dns::filter::check_properties(data));
